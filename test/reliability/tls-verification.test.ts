// TLS certificates are verified by default (unreachable.test.ts: with no `ca`, an untrusted certificate fails the
// connection, in both middlewares), and verification is never switched off silently: passing
// `rejectUnauthorized: false` is the only way, and it is logged as a warning.
import middy from "@middy/core";
import { closeHttpPools, httpPool } from "@middy-conn/http-pool";
import { closeMysqlPools, mysqlConnection } from "@middy-conn/mysql";
import { invokeInProcess } from "@middy-conn/test-harness";
import {
	recordingLogger,
	useHttpServer,
	usePoolCleanup,
	useUnreachablePeers,
} from "@middy-conn/test-harness/test-fixtures";
import { describe, expect, it } from "vitest";

const https = useHttpServer({ tls: true });
const unreachable = useUnreachablePeers();
usePoolCleanup(closeHttpPools, closeMysqlPools);

/** A recording logger, and the warnings it has been given so far. */
const capture = () => {
	const { lines, logger } = recordingLogger();
	return {
		logger,
		warnings: () => lines.filter((line) => line.level === "warn").map((line) => line.message),
	};
};

const unverified = /TLS certificate(s are| is) NOT verified/;

describe("switching certificate verification off is never silent", () => {
	it("httpPool(): a warning when the middleware is created, and the connection goes through", async () => {
		const { warnings, logger } = capture();
		const handler = middy()
			.use(httpPool({ origin: https.origin, connect: { rejectUnauthorized: false }, logger }))
			.handler(
				async (_event, context) => (await context.http.request({ path: "/json", method: "GET" })).statusCode,
			);
		expect(warnings()).toEqual([expect.stringMatching(unverified)]);
		expect(await invokeInProcess(handler, {})).toBe(200);
	});

	it("mysqlConnection(): a warning when the middleware is created, and the TLS handshake goes through", async () => {
		const { warnings, logger } = capture();
		const handler = middy()
			.use(
				mysqlConnection({
					config: {
						host: unreachable.mysqlTls.host,
						port: unreachable.mysqlTls.port,
						user: "app",
						password: "pw",
						ssl: { rejectUnauthorized: false },
					},
					logger,
				}),
			)
			.handler(async (_event, context) => context.db.query("SELECT 1"));
		expect(warnings()).toEqual([expect.stringMatching(unverified)]);
		const handshakes = unreachable.mysqlTls.tlsHandshakes;
		// The impostor refuses every login; what matters is that the TLS handshake happened, unverified.
		await expect(invokeInProcess(handler, {})).rejects.toMatchObject({ code: "ER_ACCESS_DENIED_ERROR" });
		expect(unreachable.mysqlTls.tlsHandshakes).toBe(handshakes + 1);
		expect(warnings()).toHaveLength(1);
	});

	it.each([
		[
			"a config function",
			() => ({
				host: unreachable.mysqlTls.host,
				port: unreachable.mysqlTls.port,
				user: "app",
				ssl: { rejectUnauthorized: false },
			}),
		],
		["a mysql:// uri", { uri: `mysql://app@${"127.0.0.1"}:0/app?ssl={"rejectUnauthorized":false}` }],
	])("mysqlConnection(): with %s, a warning at the first connect, once", async (_case, config) => {
		const { warnings, logger } = capture();
		const resolved =
			typeof config === "function"
				? config
				: { ...config, uri: config.uri.replace(":0/", `:${unreachable.mysqlTls.port}/`) };
		const handler = middy()
			.use(mysqlConnection({ config: resolved as never, logger }))
			.handler(async (_event, context) => context.db.query("SELECT 1"));
		expect(warnings()).toEqual([]);
		for (let i = 0; i < 2; i++) await invokeInProcess(handler, {}).catch(() => {});
		expect(warnings()).toEqual([expect.stringMatching(unverified)]);
	});

	it("mysqlConnection(): no warning for a verified connection", async () => {
		const { warnings, logger } = capture();
		const handler = middy()
			.use(
				mysqlConnection({
					config: {
						host: unreachable.mysqlTls.host,
						port: unreachable.mysqlTls.port,
						user: "app",
						ssl: { ca: unreachable.mysqlTls.ca },
					},
					logger,
				}),
			)
			.handler(async (_event, context) => context.db.query("SELECT 1"));
		await invokeInProcess(handler, {}).catch(() => {});
		expect(warnings()).toEqual([]);
	});
});
