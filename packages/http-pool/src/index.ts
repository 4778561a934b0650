// @middy-conn/http-pool: a warm undici pool in `context.http`, and `context.waitUntil` for background work that
// really arrives. See README.md for the options and the Lambda lifecycle they are chosen for.
import type { MiddlewareObj, Request } from "@middy/core";
import { invocationEndFromError, invocationScope, safeLogger } from "@middy-conn/lifecycle";
import type { Context } from "aws-lambda";
import type { Dispatcher } from "undici";
import type { WaitUntil } from "./background-tasks.ts";
import { Invocation } from "./invocation.ts";
import { type HttpPoolOptions, packageName, resolveOptions } from "./options.ts";
import { dispatcherKey, sharedDispatcher } from "./shared-dispatcher.ts";
import type { HttpPoolStats } from "./telemetry.ts";

export type { BackgroundTask, WaitUntil } from "./background-tasks.ts";
export { errorCodes } from "./errors.ts";
export type { InvocationDispatcher } from "./invocation-dispatcher.ts";
export type {
	HttpPoolConnectOptions,
	HttpPoolInterceptor,
	HttpPoolOptions,
	HttpPoolRetryOptions,
} from "./options.ts";
export { defaults } from "./options.ts";
export { closeHttpPools } from "./shared-dispatcher.ts";
export type { HttpPoolStats } from "./telemetry.ts";

/** `context.http`: an undici Dispatcher for this invocation, backed by the shared pool. */
export interface HttpPoolDispatcher extends Dispatcher {
	/** This invocation's counters so far. */
	readonly invocationStats: HttpPoolStats;
}

/** What httpPool() adds to the Lambda context. */
export interface HttpPoolContext {
	http: HttpPoolDispatcher;
	waitUntil: WaitUntil;
}

export type HttpPoolMiddleware = MiddlewareObj<unknown, unknown, Error, Context & HttpPoolContext> & {
	/**
	 * The dispatcher shared by every invocation of this execution environment (a Pool with `origin`, an Agent
	 * without), for its `stats` and for shutdown. Closing it affects every invocation; prefer closeHttpPools().
	 */
	readonly dispatcher: Dispatcher;
};

export const httpPool = (opts: HttpPoolOptions = {}): HttpPoolMiddleware => {
	const options = resolveOptions(opts);
	const logger = safeLogger(options.logger);
	if (options.connect.rejectUnauthorized === false) {
		logger.warn(
			`${packageName}: connect.rejectUnauthorized is false: TLS certificates are NOT verified. Pass connect.ca instead to trust a private CA`,
		);
	}
	const key = dispatcherKey(options);
	// Created now, at cold start, so that every invocation finds it; re-created if someone closed it.
	sharedDispatcher(key, options);

	// Per middleware instance, keyed by the Middy request: the invocation's state lives as long as its request.
	const closers = new WeakMap<Request, (end: ReturnType<typeof invocationEndFromError>) => Promise<void>>();

	const httpPoolMiddlewareBefore = (request: Request) => {
		const invocation = new Invocation(request, sharedDispatcher(key, options), options, logger);
		const context = request.context as unknown as Record<string, unknown>;
		context[options.contextKey] = invocation.dispatcher;
		context.waitUntil = invocation.tasks.waitUntil;
		// The scope closes it on the early-response path (Middy skips every after), and destroys it when an
		// onError throws; on the ordinary paths our own after/onError close it, in onion order.
		closers.set(
			request,
			invocationScope(request).add({
				name: packageName,
				close: (end) => invocation.end(end),
				destroy: (reason) => invocation.destroy(reason),
			}),
		);
	};

	const httpPoolMiddlewareAfter = async (request: Request) => {
		await closers.get(request)?.({ kind: "success" });
	};

	const httpPoolMiddlewareOnError = async (request: Request) => {
		await closers.get(request)?.(invocationEndFromError(request.error));
	};

	const middleware = {
		before: httpPoolMiddlewareBefore,
		after: httpPoolMiddlewareAfter,
		onError: httpPoolMiddlewareOnError,
	};
	Object.defineProperty(middleware, "dispatcher", {
		enumerable: false,
		get: () => sharedDispatcher(key, options),
	});
	return middleware as unknown as HttpPoolMiddleware;
};

export default httpPool;
