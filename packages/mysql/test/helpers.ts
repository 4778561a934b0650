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

/** Settles a promise into its outcome, so a test can assert on a rejection without try/catch. */
export const outcome = <T>(promise: Promise<T>): Promise<{ value?: T; error?: unknown }> =>
	promise.then(
		(value) => ({ value }),
		(error: unknown) => ({ error }),
	);

/** A logger that records, for assertions (and keeps the test output quiet). */
export const recordingLogger = () => {
	const lines: { level: string; message: string; extra: unknown[] }[] = [];
	const at =
		(level: string) =>
		(message: string, ...extra: unknown[]) => {
			lines.push({ level, message, extra });
		};
	return { lines, logger: { info: at("info"), warn: at("warn"), error: at("error") } };
};
