// Per-invocation connection counters, from undici's diagnostics channels.
//
// undici publishes `undici:client:connected` when a socket is opened and `undici:client:sendHeaders` each time a
// request is written to a socket. A request written on a socket that has carried nothing before opened that
// connection; any other request reused one. What the channels do not say is which invocation a request belongs
// to, and invocations may run concurrently in one process (Lambda Managed Instances), so no module-level counter
// can hold the answer. The attribution travels with the request instead:
// 1. the per-invocation dispatcher puts the request's record in the dispatch options (a symbol key, which the
//    retry interceptor and ordinary interceptors copy along with the other options);
// 2. the innermost interceptor, next to the pool, runs the pool's dispatch inside a request scope holding that
//    record (an AsyncLocalStorage: undici-adapter.ts's requestScope). undici builds its internal Request synchronously inside that dispatch, or later from its pool
//    queue inside the async context captured when the request was queued, so `undici:request:create` sees the
//    record and pins it on the Request object (once: see `Creating`);
// 3. `undici:client:sendHeaders` hands over that Request and its socket.
// The state kept here is about sockets and undici's Request objects, in weak collections keyed by the objects the
// channels publish (nothing is written onto undici's objects; entries go with them), never about an invocation.
// What this relies on in undici beyond its types (the channels' messages, the async context of request:create, the
// symbol keys of dispatch options) is in undici-adapter.ts.
import type { Dispatcher } from "undici";
import {
	dispatchTag,
	onHeadersSent,
	onRequestCreate,
	onSocketConnected,
	requestScope,
} from "./undici-adapter.ts";

export interface HttpPoolStats {
	/** Requests of this invocation that had to open a new connection (TCP, and TLS for https). */
	connectionsOpened: number;
	/** Requests of this invocation sent on a connection that was already open. */
	connectionsReused: number;
	/** Requests written to a socket, retries included. */
	requests: number;
	/** What the end of the invocation found still open: bodies read to their end and discarded, requests aborted. */
	leftovers: { dumped: number; aborted: number };
	/** `context.waitUntil` tasks, by how they ended. */
	background: { finished: number; failed: number; aborted: number };
}

export const emptyStats = (): HttpPoolStats => ({
	connectionsOpened: 0,
	connectionsReused: 0,
	requests: 0,
	leftovers: { dumped: 0, aborted: 0 },
	background: { finished: 0, failed: 0, aborted: 0 },
});

/** What a request reports to as undici works on it: one record per request, shared by its retries. */
export interface RequestAttribution {
	/** undici created a Request (an attempt) for it. */
	onAttempt(): void;
	/** An attempt's headers are about to be written to a socket, new or reused. */
	onSent(newConnection: boolean): void;
}

/** Dispatch option key carrying the request's record down to the pool. */
export const kAttribution = Symbol("@middy-conn/http-pool/attribution");
/** undici's Request (an attempt) → the record of the request it is an attempt of. */
const owners = new WeakMap<object, RequestAttribution>();
/** Sockets connected that have carried nothing yet. */
const freshSockets = new WeakSet<object>();

/**
 * What the create subscriber reads. A box, emptied by the first Request created in it: the sockets and timers
 * undici starts inside that dispatch inherit the async context, and must not hand the record to requests
 * created later from their callbacks.
 */
interface Creating {
	attribution: RequestAttribution | undefined;
}

const creating = requestScope<Creating>();

let subscribed = false;

/** Subscribes to undici's channels, once per process. */
export const subscribeTelemetry = (): void => {
	if (subscribed) return;
	subscribed = true;
	onRequestCreate((request) => {
		const box = creating.current();
		const attribution = box?.attribution;
		if (!box || !attribution) return;
		box.attribution = undefined;
		owners.set(request, attribution);
		attribution.onAttempt();
	});
	onSocketConnected((socket) => {
		freshSockets.add(socket);
	});
	onHeadersSent((request, socket) => {
		const fresh = socket !== undefined && freshSockets.delete(socket);
		owners.get(request)?.onSent(fresh);
	});
};

/**
 * The innermost interceptor: runs the pool's dispatch with the request's record in scope, so that the Request
 * undici creates for it (first attempt and every retry) can be attributed. Requests without a record run with
 * an empty scope, so that they never inherit one from the async context they happen to be dispatched in.
 */
export const attributionInterceptor: Dispatcher.DispatcherComposeInterceptor = (dispatch) =>
	function attribute(opts, handler) {
		const attribution = dispatchTag<RequestAttribution>(opts, kAttribution);
		return creating.run(attribution ? { attribution } : undefined, dispatch, opts, handler);
	};
