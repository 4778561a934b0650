// @middy-conn/http-pool: a warm undici pool in `context.http`, and `context.waitUntil` for background work that
// really arrives. See README.md for the options and the Lambda lifecycle they are chosen for.
import type { MiddlewareObj, Request } from "@middy/core";
import { Invocation, type ResourceHandle, safeLogger, type WaitUntil } from "@middy-conn/lifecycle";
import { tlsSettingsCheck } from "@middy-conn/lifecycle/internal";
import type { Dispatcher } from "undici";
import { HttpInvocation } from "./invocation.ts";
import { connectorKeys, type HttpPoolOptions, httpPoolValidateOptions, pkg } from "./options.ts";
import { dispatcherKey, sharedDispatcher } from "./shared-dispatcher.ts";
import type { HttpPoolStats } from "./telemetry.ts";

export type { BackgroundTask, WaitUntil } from "@middy-conn/lifecycle";
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

/** The Lambda context as Middy types it. */
type LambdaContext = Request["context"];

/**
 * The context a handler sees behind `httpPool({ contextKey })`: the Lambda context with the invocation's
 * dispatcher (`context.http` by default) and `context.waitUntil`. It includes the Lambda context, as
 * `MysqlContext` does, so that a handler written on its own needs no type from `aws-lambda`.
 */
export type HttpPoolContext<TContextKey extends string = "http"> = LambdaContext & {
	[K in TContextKey]: HttpPoolDispatcher;
} & { waitUntil: WaitUntil };

export type HttpPoolMiddleware<TContextKey extends string = "http"> = MiddlewareObj<
	unknown,
	// biome-ignore lint/suspicious/noExplicitAny: Middy's own default for a middleware's result type
	any,
	Error,
	LambdaContext & HttpPoolContext<TContextKey>
> & {
	/**
	 * The dispatcher shared by every invocation of this execution environment (a Pool with `origin`, an Agent
	 * without), for its `stats` and for shutdown. Closing it affects every invocation; prefer closeHttpPools().
	 */
	readonly dispatcher: Dispatcher;
};

export const httpPool = <TContextKey extends string = "http">(
	opts: HttpPoolOptions<TContextKey> = {},
): HttpPoolMiddleware<TContextKey> => {
	const options = httpPoolValidateOptions(opts);
	const logger = safeLogger(options.logger);
	tlsSettingsCheck(logger, pkg, {
		option: "connect",
		instead: "Pass connect.ca instead to trust a private CA",
		driverKeys: connectorKeys,
	})(options.connect);
	const key = dispatcherKey(options);
	// Created now, at cold start, so that every invocation finds it; looked up by each invocation at its first
	// request (not in `before`: an invocation that sends nothing does not pay for it), and re-created there if
	// someone closed it.
	const shared = () => sharedDispatcher(key, options);
	shared();

	const reportsStats = Boolean(options.onStats || options.logStats);
	const invocationOptions = {
		logger,
		waitUntilTimeout: options.waitUntilTimeout,
		waitUntilReserve: options.waitUntilReserve,
	};
	// Where this middleware keeps its handle on the invocation's requests, on the request (one symbol per
	// middleware instance, as @middy-conn/mysql does).
	const slot = Symbol(`${pkg}:${options.contextKey}`);
	type WithSlot = Request & { [slot]?: ResourceHandle };

	// Registers the invocation's dispatcher with the invocation, whose teardown closes it on every path (after
	// the background tasks).
	const httpPoolMiddlewareBefore = (request: Request) => {
		const invocation = Invocation.of(request, invocationOptions);
		const http = new HttpInvocation(invocation, request, shared, options, logger);
		(request as WithSlot)[slot] = invocation.register(http);
		// Stats are reported on every path, an early response included, even when nothing was sent.
		if (reportsStats) invocation.inUse();
		const context = request.context as unknown as Record<string, unknown>;
		context[options.contextKey] = http.dispatcher;
		context.waitUntil = invocation.waitUntil;
	};

	const httpPoolMiddlewareAfter = (request: Request) => (request as WithSlot)[slot]?.end();

	const httpPoolMiddlewareOnError = (request: Request) =>
		(request as WithSlot)[slot]?.end()?.catch((error: unknown) => {
			logger.warn(`${pkg}: cleanup failed`, { error });
		});

	const middleware = {
		before: httpPoolMiddlewareBefore,
		after: httpPoolMiddlewareAfter,
		onError: httpPoolMiddlewareOnError,
	};
	Object.defineProperty(middleware, "dispatcher", {
		enumerable: false,
		get: shared,
	});
	return middleware as unknown as HttpPoolMiddleware<TContextKey>;
};

export default httpPool;
