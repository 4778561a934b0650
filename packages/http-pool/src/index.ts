// @middy-conn/http-pool: a warm undici pool in `context.http`, and `context.waitUntil` for background work that
// really arrives. See README.md for the options and the Lambda lifecycle they are chosen for.
import type { MiddlewareObj, Request } from "@middy/core";
import { safeLogger, type WaitUntil } from "@middy-conn/lifecycle";
import { invocationMiddleware, tlsSettingsCheck } from "@middy-conn/lifecycle/internal";
import type { Dispatcher } from "undici";
import { HttpInvocation } from "./invocation.ts";
import { type HttpPoolOptions, httpPoolValidateOptions, pkg } from "./options.ts";
import { dispatcherKey, sharedDispatcher } from "./shared-dispatcher.ts";
import type { HttpPoolStats } from "./telemetry.ts";
import { undiciConnectorKeys } from "./undici-adapter.ts";

export type { BackgroundTask, WaitUntil } from "@middy-conn/lifecycle";
export { MiddyConnError } from "@middy-conn/lifecycle";
export { errorCodes } from "./errors.ts";
export type { InvocationDispatcher } from "./invocation-dispatcher.ts";
export type {
	HttpPoolConnectOptions,
	HttpPoolInterceptor,
	HttpPoolOptions,
	HttpPoolRetryOptions,
} from "./options.ts";
export { defaults, httpPoolValidateOptions } from "./options.ts";
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
		driverKeys: undiciConnectorKeys,
	})(options.connect);
	const key = dispatcherKey(options);
	// Created now, at cold start, so that every invocation finds it; looked up by each invocation at its first
	// request (not in `before`: an invocation that sends nothing does not pay for it), and re-created there if
	// someone closed it.
	const shared = () => sharedDispatcher(key, options);
	shared();

	// The invocation's dispatcher is registered with the invocation, whose teardown closes it on every path (after
	// the background tasks).
	const middleware = invocationMiddleware({
		pkg,
		name: "httpPool",
		contextKey: options.contextKey,
		invocationOptions: {
			logger,
			waitUntilTimeout: options.waitUntilTimeout,
			waitUntilReserve: options.waitUntilReserve,
		},
		reportsStats: Boolean(options.onStats || options.logStats),
		open: (invocation, request) => {
			const http = new HttpInvocation(invocation, request, shared, options, logger);
			return { resource: http, value: http.dispatcher };
		},
	});
	Object.defineProperty(middleware, "dispatcher", {
		enumerable: false,
		get: shared,
	});
	return middleware as unknown as HttpPoolMiddleware<TContextKey>;
};

export default httpPool;
