// What this package relies on in undici beyond its typed public API, in one place. Each piece is exercised on its own
// against the lowest and the latest undici 8.x this package supports (test/undici-surface.test.ts, a test named
// after each export), so that an undici release that changes one fails there, not in some distant behaviour test.
//
// 1. `Dispatcher1Wrapper.wrapHandler` (static, not in undici's types): adapts a handler written for undici ≤ 7
//    (`onConnect`, `onHeaders`...), such as those of Node's own fetch, to the current handler API. Without it a
//    Dispatcher of our own would have to implement both APIs.
// 2. Forcing `allowH2: false` on the dispatch options of such a handler: a legacy handler cannot read an HTTP/2
//    response (Dispatcher1Wrapper does the same for the requests it dispatches).
// 3. The diagnostics channels `undici:request:create` ({ request }), `undici:client:connected` ({ socket }) and
//    `undici:client:sendHeaders` ({ request, socket }): documented in undici's DiagnosticsChannel.md, but their
//    messages are untyped; telemetry.ts counts connections opened and reused from them.
// 4. `undici:request:create` is published in the async context of the dispatch that creates the Request: at once,
//    inside the dispatch, or later from the pool's queue, in the context captured when the request was queued.
//    That is how a Request is told apart from those of other invocations running concurrently (requestScope).
// 5. Symbol keys of the dispatch options reach every interceptor and the retry policy's `opts` (compose() and
//    interceptors.retry copy the options with their own keys): the request's record travels that way.
// 6. The retry policy may return its timer, which undici's retry handler clears when the request is aborted while
//    the policy waits (the type says the policy returns nothing).
// 7. A composed dispatcher (`pool.compose(...)`) reports the pool's `closed` and `destroyed` (typed on Pool and
//    Agent only).
// 8. The keys undici's connector reads from the `connect` option beyond Node's tls and net options (lib/core/
//    connect.js): for the check of unknown keys in `connect`.
import { AsyncLocalStorage } from "node:async_hooks";
import diagnosticsChannel from "node:diagnostics_channel";
import { type Dispatcher, Dispatcher1Wrapper } from "undici";

type DispatchHandler = Dispatcher.DispatchHandler;
type DispatchOptions = Dispatcher.DispatchOptions;

/**
 * The handler as the current API has it (1), and whether it was written for undici ≤ 7. A legacy handler's
 * request must not negotiate HTTP/2 (2): see `forLegacyHandler`.
 */
export const asCurrentHandler = (handler: DispatchHandler): { handler: DispatchHandler; legacy: boolean } => {
	if (typeof handler?.onRequestStart === "function") return { handler, legacy: false };
	const wrapper = Dispatcher1Wrapper as unknown as { wrapHandler(handler: unknown): DispatchHandler };
	return { handler: wrapper.wrapHandler(handler), legacy: true };
};

/** Dispatch options for a legacy handler's request: HTTP/1.1 only (2). Changes `opts` in place. */
export const forLegacyHandler = <T extends DispatchOptions>(opts: T): T => {
	(opts as { allowH2?: boolean }).allowH2 = false;
	return opts;
};

/** An undici Request (an attempt), as the channels publish it: only its identity is used. */
export type UndiciRequest = object;

/** Subscribes to a channel; returns the unsubscribe. */
const subscribe = (channel: string, onMessage: (message: unknown) => void): (() => void) => {
	diagnosticsChannel.subscribe(channel, onMessage);
	return () => {
		diagnosticsChannel.unsubscribe(channel, onMessage);
	};
};

/** `undici:request:create` (3): a Request (an attempt: the first, or a retry) was created. */
export const onRequestCreate = (listener: (request: UndiciRequest) => void): (() => void) =>
	subscribe("undici:request:create", (message) => listener((message as { request: UndiciRequest }).request));

/** `undici:client:connected` (3): a socket was opened (TCP, and TLS for https). */
export const onSocketConnected = (listener: (socket: object) => void): (() => void) =>
	subscribe("undici:client:connected", (message) => {
		const { socket } = message as { socket?: object };
		if (socket) listener(socket);
	});

/** `undici:client:sendHeaders` (3): a Request's headers are about to be written to this socket, new or reused. */
export const onHeadersSent = (
	listener: (request: UndiciRequest, socket: object | undefined) => void,
): (() => void) =>
	subscribe("undici:client:sendHeaders", (message) => {
		const { request, socket } = message as { request: UndiciRequest; socket?: object };
		listener(request, socket);
	});

/**
 * A value that the Requests undici creates for a dispatch can see from `onRequestCreate` (4): `run` the dispatch
 * with it, read it with `current()` in the listener. Requests created later from the pool's queue see the value
 * their dispatch ran with; so do the sockets and timers started inside it (hence the box in telemetry.ts).
 */
export interface RequestScope<T> {
	run<A extends unknown[], R>(value: T | undefined, fn: (...args: A) => R, ...args: A): R;
	current(): T | undefined;
}

export const requestScope = <T>(): RequestScope<T> => {
	const storage = new AsyncLocalStorage<T | undefined>();
	// Bound, not wrapped: `run` is on every dispatch's path, and a wrapper would copy its arguments once more.
	return { run: storage.run.bind(storage), current: storage.getStore.bind(storage) };
};

/** Puts `value` in the dispatch options under `key` (5): every interceptor and the retry policy see it. */
export const tagDispatch = <T extends DispatchOptions>(opts: T, key: symbol, value: unknown): T => {
	(opts as unknown as Record<symbol, unknown>)[key] = value;
	return opts;
};

/** The value `tagDispatch` put under `key` (5). */
export const dispatchTag = <T>(opts: DispatchOptions, key: symbol): T | undefined =>
	(opts as unknown as Record<symbol, unknown>)[key] as T | undefined;

/** What a retry policy returns to replay after `delay` ms: the timer, which undici clears on abort (6). */
export const replayAfter = (delay: number, callback: (error: null) => void): undefined =>
	setTimeout(() => callback(null), delay) as unknown as undefined;

/** True when the dispatcher (composed or not) can no longer be used (7). */
export const isClosed = (dispatcher: Dispatcher): boolean => {
	const state = dispatcher as Dispatcher & { closed?: boolean; destroyed?: boolean };
	return state.closed === true || state.destroyed === true;
};

/**
 * The keys undici's connector reads from `connect` beyond Node's tls options (8): its own (destructured by its
 * buildConnector, or read when it connects) and those of net.connect, which it passes through. The surface test
 * reads undici's connect.js and fails when undici reads a key that is not here or in Node's tls list.
 */
export const undiciConnectorKeys: readonly string[] = [
	"maxCachedSessions",
	"allowH2",
	"preferH2",
	"useH2c",
	"highWaterMark",
	"keepAlive",
	"keepAliveInitialDelay",
	"noDelay",
	"localAddress",
	"localPort",
	"family",
	"hints",
	"lookup",
	"autoSelectFamily",
	"autoSelectFamilyAttemptTimeout",
	"socketPath",
	"timeout",
	"typeOfService",
];
