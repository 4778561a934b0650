// The one piece of module-level state: the shared dispatchers, one per execution environment for equal options.
//
// A connection pool is worth having only if warm invocations find it again, so it lives in module scope (a cold
// start runs module scope once; warm invocations reuse it). Two httpPool() calls with equal options (say, one per
// handler module bundled into the same function) share one pool instead of doubling the connections. Concurrent
// invocations in one process (Lambda Managed Instances) share it too: nothing in it belongs to an invocation.
import { optionsKey } from "@middy-conn/lifecycle";
import { Agent, type Dispatcher, Pool } from "undici";
import type { ResolvedOptions } from "./options.ts";
import { retryInterceptor } from "./retry.ts";
import { attributionInterceptor, subscribeTelemetry } from "./telemetry.ts";
import { isClosed } from "./undici-adapter.ts";

const dispatchers = new Map<string, Dispatcher>();

// What the undici Pool (or Agent) is created with.
const poolSettings = (options: ResolvedOptions) => ({
	connections: options.connections,
	keepAliveTimeout: options.keepAliveTimeout,
	keepAliveMaxTimeout: options.keepAliveMaxTimeout,
	connectTimeout: options.connectTimeout,
	headersTimeout: options.headersTimeout,
	bodyTimeout: options.bodyTimeout,
	allowH2: options.allowH2,
	// With rejectUnauthorized: true unless the caller turned it off (defaults.connect).
	connect: options.connect,
});

/** The key of the dispatcher these options need: only the options that shape the dispatcher take part. */
export const dispatcherKey = (options: ResolvedOptions): string =>
	optionsKey({
		origin: options.origin,
		...poolSettings(options),
		retry: options.retry,
		interceptors: options.interceptors,
	});

const createDispatcher = (options: ResolvedOptions): Dispatcher => {
	subscribeTelemetry();
	const settings = poolSettings(options);
	// With an origin, one pool for it; without, an Agent keeps one pool per origin with the same settings.
	const base: Dispatcher = options.origin ? new Pool(options.origin, settings) : new Agent(settings);
	// compose() applies the first interceptor innermost: attribution sits next to the pool (it must see every
	// attempt, retries included), retry wraps it, and the caller's interceptors see each request first.
	return base.compose(
		attributionInterceptor,
		...(options.retry ? [retryInterceptor(options.retry)] : []),
		...options.interceptors,
	);
};

/** The shared dispatcher for these options (created on first use, and again if it was closed). */
export const sharedDispatcher = (key: string, options: ResolvedOptions): Dispatcher => {
	let dispatcher = dispatchers.get(key);
	if (!dispatcher || isClosed(dispatcher)) {
		dispatcher = createDispatcher(options);
		dispatchers.set(key, dispatcher);
	}
	return dispatcher;
};

/**
 * Closes every shared dispatcher of this process and forgets them; the next invocation creates new ones. For
 * tests, and for a SIGTERM handler (Lambda sends SIGTERM only when an extension is registered).
 */
export const closeHttpPools = async (): Promise<void> => {
	const all = [...dispatchers.values()];
	dispatchers.clear();
	await Promise.allSettled(all.map((dispatcher) => dispatcher.destroy()));
};
