// Shared by the mysql tests: a config for the file's own database and user, and a way to call a Middy handler as
// the Lambda runtime would (a fresh Lambda-like context per invocation).
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
