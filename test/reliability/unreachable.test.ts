// Configs that reach nothing: a closed port, wrong credentials, a server that never sends its handshake, a server
// whose TLS certificate nobody trusts. Through Middy, as a Lambda invocation with time left, each fails with a clear
// error that keeps the driver's `code`, within the timeout it was given: the error is the connect's own, never
// Middy's TimeoutError at the end of the invocation's time.
import middy from "@middy/core";
import { closeHttpPools, httpPool } from "@middy-conn/http-pool";
import { closeMysqlPools, mysqlConnection } from "@middy-conn/mysql";
import { invokeInProcess } from "@middy-conn/test-harness";
import {
	useHttpServer,
	usePoolCleanup,
	useTestDatabase,
	useUnreachablePeers,
} from "@middy-conn/test-harness/test-fixtures";
import { describe, expect, it } from "vitest";

/** The invocation has this long; every connect below is bounded far below it. */
const INVOCATION_MS = 8000;

const { db } = useTestDatabase("unreachable");
const https = useHttpServer({
	tls: true,
	routes: {
		"/v1/items": (request, response) => {
			const authorized = request.headers.authorization === "Bearer right-token";
			response.writeHead(authorized ? 200 : 401, { "content-type": "application/json" }).end("{}");
		},
	},
});
const unreachable = useUnreachablePeers();
usePoolCleanup(closeHttpPools, closeMysqlPools);

/** Runs the handler as one Lambda invocation; resolves to what it threw. */
const failureOf = async (handler: unknown) =>
	invokeInProcess(handler, {}, { timeoutMs: INVOCATION_MS }).then(
		(value) => ({ error: undefined, value }),
		(error: Error & { code?: string; cause?: unknown }) => ({ error, value: undefined }),
	);

describe("mysqlConnection(): configs that reach nothing", () => {
	const target = () => ({ host: "127.0.0.1", user: db.user, password: db.password, database: db.database });

	it.each<[string, string, () => Record<string, unknown>, RegExp]>([
		[
			"a closed port",
			"ECONNREFUSED",
			() => ({ ...target(), port: unreachable.closedPort }),
			/refused the connection at 127\.0\.0\.1:\d+/,
		],
		[
			"a wrong password",
			"ER_ACCESS_DENIED_ERROR",
			() => ({ ...target(), port: db.port, password: "not-the-password" }),
			/rejected the credentials as '\w+'/,
		],
		[
			"a server that never sends its handshake",
			"ETIMEDOUT",
			() => ({ ...target(), port: unreachable.silent.port, connectTimeout: 400 }),
			/timed out after 400 ms/,
		],
		[
			"a server whose TLS certificate is not trusted (no ca)",
			"HANDSHAKE_SSL_ERROR",
			() => ({ ...target(), port: unreachable.mysqlTls.port, ssl: {} }),
			/TLS handshake with MySQL at 127\.0\.0\.1:\d+ failed .*self-signed certificate/,
		],
		[
			"a server without TLS, when TLS was asked for",
			"HANDSHAKE_NO_SSL_SUPPORT",
			() => ({ ...target(), port: db.port, ssl: {} }),
			/TLS handshake with MySQL at .* failed \(HANDSHAKE_NO_SSL_SUPPORT\)/,
		],
	])("%s: %s, in a clear error", async (_case, code, config, message) => {
		for (const mode of ["scoped", "pool"] as const) {
			const handler = middy()
				.use(mysqlConnection({ mode, config: config() as never, logger: false }))
				.handler(async (_event, context) => context.db.query("SELECT 1"));
			const { error } = await failureOf(handler);
			expect(error).toMatchObject({ name: "MiddyConnError", code, package: "@middy-conn/mysql" });
			expect(error?.message).toMatch(message);
			expect(error?.cause).toBeDefined();
		}
	});

	it("trusts that server once its ca is given, and gets as far as the login (TLS was verified, not skipped)", async () => {
		const handler = middy()
			.use(
				mysqlConnection({
					config: { ...target(), port: unreachable.mysqlTls.port, ssl: { ca: unreachable.mysqlTls.ca } },
					logger: false,
				}),
			)
			.handler(async (_event, context) => context.db.query("SELECT 1"));
		const before = unreachable.mysqlTls.tlsHandshakes;
		const { error } = await failureOf(handler);
		expect(error).toMatchObject({ code: "ER_ACCESS_DENIED_ERROR" });
		expect(unreachable.mysqlTls.tlsHandshakes).toBe(before + 1);
	});
});

describe("httpPool(): configs that reach nothing", () => {
	const request = (origin: string, options: Record<string, unknown>, method: "GET" | "POST" = "GET") =>
		middy()
			.use(httpPool({ origin, logger: false, retry: { maxRetries: 1 }, ...options }))
			.handler(async (_event, context) => {
				const { statusCode, body } = await context.http.request({
					path: "/v1/items",
					method,
					headers: { authorization: "Bearer right-token" },
					...(method === "POST" ? { body: "{}" } : {}),
				});
				await body.dump();
				return statusCode;
			});

	it.each<[string, () => [string, Record<string, unknown>, "GET" | "POST"], Record<string, unknown>]>([
		[
			"a closed port, GET",
			() => [`https://127.0.0.1:${unreachable.closedPort}`, {}, "GET"],
			{ code: "ECONNREFUSED" },
		],
		[
			"a closed port, POST (never sent, so safe to retry)",
			() => [`https://127.0.0.1:${unreachable.closedPort}`, {}, "POST"],
			{ code: "MIDDY_CONN_HTTP_REQUEST_NOT_SENT", retrySafe: true, cause: { code: "ECONNREFUSED" } },
		],
		[
			"a server that never completes the TLS handshake",
			() => [`https://127.0.0.1:${unreachable.silent.port}`, { connectTimeout: 400 }, "GET"],
			{ code: "UND_ERR_CONNECT_TIMEOUT" },
		],
		[
			"a server that accepts and never answers",
			() => [`http://127.0.0.1:${unreachable.silent.port}`, { headersTimeout: 400 }, "GET"],
			{ code: "UND_ERR_HEADERS_TIMEOUT" },
		],
		[
			"a server whose TLS certificate is not trusted (no ca)",
			() => [https.origin, {}, "GET"],
			{ code: expect.stringMatching(/SELF_SIGNED|UNABLE_TO_VERIFY/) },
		],
	])("%s: the driver's code, in a clear error", async (_case, setup, expected) => {
		const [origin, options, method] = setup();
		const { error } = await failureOf(request(origin, options, method));
		expect(error).toBeInstanceOf(Error);
		expect(error).toMatchObject(expected);
		expect(error?.name).not.toBe("TimeoutError");
		expect(error?.message.length).toBeGreaterThan(10);
	});

	it("a wrong token is an answer, not a failure: the 401 reaches the handler, sent once", async () => {
		const handler = middy()
			.use(httpPool({ origin: https.origin, connect: { ca: https.ca }, logger: false }))
			.handler(async (_event, context) => {
				const { statusCode, body } = await context.http.request({
					path: "/v1/items",
					method: "GET",
					headers: { authorization: "Bearer wrong-token" },
				});
				await body.dump();
				return statusCode;
			});
		https.resetStats();
		expect(await invokeInProcess(handler, {}, { timeoutMs: INVOCATION_MS })).toBe(401);
		expect(https.receivedCount("GET", "/v1/items")).toBe(1);
	});
});
