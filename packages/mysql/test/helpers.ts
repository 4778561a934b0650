// Shared by the mysql tests: a config for the file's own database and user, and a way to call a Middy handler as
// the Lambda runtime would (a fresh Lambda-like context per invocation).
import { type AddressInfo, connect, createServer, type Socket } from "node:net";
import { createLambdaContext, type LambdaContextOptions, type TestDatabase } from "@middy-conn/test-harness";
import type { Context } from "aws-lambda";
import type { MysqlConfig } from "../src/index.ts";

export const configOf = (db: TestDatabase): MysqlConfig => ({
	host: db.host,
	port: db.port,
	user: db.user,
	password: db.password,
	database: db.database,
});

/**
 * `config` and `mode` for a test run in `mode`: in pool mode, a pool of one connection, so that one connection
 * stays warm and the next invocation gets the same server session back.
 */
export const inMode = (db: TestDatabase, mode: "scoped" | "pool") => ({
	config: { ...configOf(db), ...(mode === "pool" ? { connectionLimit: 1 } : {}) },
	mode,
});

/** Calls the handler with a fresh context (handlers typed with `context.db` take a plain one: the middleware adds it). */
export const invoke = <TResult = unknown>(
	handler: unknown,
	event: unknown = {},
	context: LambdaContextOptions | Context = {},
): Promise<TResult> =>
	(handler as (event: unknown, context: Context) => Promise<TResult>)(
		event,
		"getRemainingTimeInMillis" in context ? context : createLambdaContext(context),
	);

export { outcome, recordingLogger } from "@middy-conn/test-harness/test-fixtures";

/**
 * A loopback TCP proxy whose open connections can be frozen: bytes stop flowing both ways and nothing is closed,
 * like a server (or a path to it) that stops answering. Connections opened after a freeze work normally.
 */
export const startFreezableProxy = async (
	target: { host: string; port: number },
	options: {
		/** Freezes a connection (this chunk included) as soon as the client sends a chunk this returns true for. */
		freezeOn?: (clientChunk: Buffer) => boolean;
	} = {},
) => {
	const flows = new Set<{ client: Socket; upstream: Socket; frozen: boolean }>();
	const server = createServer((client) => {
		const upstream = connect({ host: target.host, port: target.port });
		const flow = { client, upstream, frozen: false };
		flows.add(flow);
		client.on("data", (chunk: Buffer) => {
			if (options.freezeOn?.(chunk)) flow.frozen = true;
			if (!flow.frozen) upstream.write(chunk);
		});
		upstream.on("data", (chunk: Buffer) => {
			if (!flow.frozen) client.write(chunk);
		});
		client.on("error", () => upstream.destroy());
		upstream.on("error", () => client.destroy());
		client.on("close", () => {
			upstream.destroy();
			flows.delete(flow);
		});
		upstream.on("close", () => client.destroy());
	});
	await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
	const { port } = server.address() as AddressInfo;
	return {
		host: "127.0.0.1",
		port,
		/** Stops every open connection: what either side sends from now on is swallowed. */
		freeze() {
			for (const flow of flows) flow.frozen = true;
		},
		close: () =>
			new Promise<void>((resolve) => {
				for (const flow of flows) {
					flow.client.destroy();
					flow.upstream.destroy();
				}
				server.close(() => resolve());
			}),
	};
};
