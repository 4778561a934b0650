// Shared pieces of the http-pool tests: a Lambda-like context typed as the handler sees it, and the harness's
// recording logger as these tests use it.
import { setImmediate } from "node:timers/promises";
import { createLambdaContext, type RouteHandler } from "@middy-conn/test-harness";
import { recordingLogger } from "@middy-conn/test-harness/test-fixtures";
import type { Context } from "aws-lambda";
import type { HttpPoolContext } from "../src/index.ts";

/**
 * The harness's Lambda context (createLambdaContext), typed as the handler sees it (Middy types a wrapped handler's
 * context with what its middlewares add: httpPool() adds `http` and `waitUntil` in its before; `TContext` for a
 * handler behind httpPool({ contextKey })). `remainingMs` gives it a clock (Middy's early timeout and the
 * waitUntil deadline read it); without it the context has none, as in a local run: no early timeout, and
 * background tasks get waitUntilTimeout.
 */
export const lambdaContext = <TContext extends Context = HttpContext>(remainingMs?: number): TContext => {
	const context = createLambdaContext({
		functionName: "http-pool-test",
		...(remainingMs === undefined ? {} : { timeoutMs: remainingMs }),
	});
	if (remainingMs !== undefined) return context as TContext;
	const { getRemainingTimeInMillis: _noClock, ...withoutClock } = context;
	return withoutClock as TContext;
};

/** The harness's recording logger, its spies alone: `expect(logger.warn).toHaveBeenCalledWith(…)`. */
export const spyLogger = () => recordingLogger().logger;

/**
 * The test server's audit endpoint, which the tests' background tasks POST to: it answers `{}` after `delayMs`.
 * With the default 30 ms, a POST still in flight when the handler returns is lost on Lambda unless something
 * waits for it; 0 answers at once.
 */
export const auditRoute = (delayMs = 30): Record<"/audit", RouteHandler> => ({
	"/audit": (_request, response) => {
		if (delayMs === 0) response.end("{}");
		else setTimeout(() => response.end("{}"), delayMs);
	},
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
