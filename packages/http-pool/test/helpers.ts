// Shared pieces of the http-pool tests: a Lambda-like context, and a logger that records what it is told.
import { setImmediate } from "node:timers/promises";
import type { Context } from "aws-lambda";
import { vi } from "vitest";
import type { HttpPoolContext } from "../src/index.ts";

let nextRequestId = 0;

/**
 * A Lambda context; `remainingMs` gives it a clock (Middy's early timeout and the waitUntil deadline use it).
 * Typed as the handler will see it (Middy types a wrapped handler's context with what its middlewares add):
 * httpPool() adds `http` and `waitUntil` in its before.
 */
/**
 * A Lambda-like context to call a handler with (typed as the handler's context: the middleware adds the rest;
 * `TContext` for a handler behind httpPool({ contextKey })).
 */
export const lambdaContext = <TContext extends Context = HttpContext>(remainingMs?: number): TContext => {
	const deadline = remainingMs === undefined ? undefined : Date.now() + remainingMs;
	return {
		callbackWaitsForEmptyEventLoop: false,
		functionName: "http-pool-test",
		functionVersion: "$LATEST",
		invokedFunctionArn: "arn:aws:lambda:eu-west-1:123456789012:function:http-pool-test",
		memoryLimitInMB: "1024",
		awsRequestId: `request-${++nextRequestId}`,
		logGroupName: "/aws/lambda/http-pool-test",
		logStreamName: "stream",
		...(deadline === undefined ? {} : { getRemainingTimeInMillis: () => Math.max(0, deadline - Date.now()) }),
		done: () => {},
		fail: () => {},
		succeed: () => {},
	} as unknown as TContext;
};

/** A logger shaped like console and the Powertools Logger, recording every call. */
export const spyLogger = () => ({
	info: vi.fn<(message: string, ...extra: unknown[]) => void>(),
	warn: vi.fn<(message: string, ...extra: unknown[]) => void>(),
	error: vi.fn<(message: string, ...extra: unknown[]) => void>(),
});

/** Records unhandled rejections while a test runs: there must be none. */
export const watchUnhandledRejections = () => {
	const seen: unknown[] = [];
	const listener = (reason: unknown) => seen.push(reason);
	process.on("unhandledRejection", listener);
	return {
		seen,
		stop: () => process.off("unhandledRejection", listener),
	};
};

/** The context a handler sees under httpPool({ contextKey }): Lambda's, plus `http` (or the key) and `waitUntil`. */
export type HttpContext<TContextKey extends string = "http"> = Context & HttpPoolContext<TContextKey>;

/**
 * Invokes like Lambda's runtime: the next invocation starts only after the runtime has posted this response and
 * fetched the next event, which is I/O and at least one turn of the event loop. (undici hands a kept-alive socket
 * back to its pool one turn after the response ended, so calls chained within one turn would find it busy and
 * open another connection, which never happens between real invocations.)
 */
export const asLambda =
	<TEvent, TResult>(handler: (event: TEvent, context: HttpContext) => Promise<TResult>) =>
	async (event: TEvent, context: HttpContext): Promise<TResult> => {
		try {
			return await handler(event, context);
		} finally {
			await setImmediate();
		}
	};
