// What @middy-conn/http-pool relies on in undici, each piece exercised on its own against real undici objects and a
// real HTTP server on 127.0.0.1: the diagnostics channels telemetry.ts reads, the async context a Request is created
// in, the retry interceptor retry.ts configures, compose() and its order, the composed dispatcher's state
// (shared-dispatcher.ts), a Dispatcher subclass with undici's request() and a fetch (invocation-dispatcher.ts), and
// the handler and controller API tracked-request.ts implements. An undici release that changes one of them fails
// the test named after it, not some distant behaviour test.
//
// Run on the latest undici (the lockfile's) and, with MIDDY_CONN_DRIVERS=floor, on the lowest the dependency range
// allows (.ci/run runs both). The first test checks which one this run really loaded.
import { AsyncLocalStorage } from "node:async_hooks";
import diagnosticsChannel from "node:diagnostics_channel";
import { Socket } from "node:net";
import {
	type LoopbackServer,
	startHttpServer,
	startSilentServer,
	type TestHttpServer,
} from "@middy-conn/test-harness";
import * as undici from "undici";
import { Agent, Dispatcher, Dispatcher1Wrapper, interceptors, Pool } from "undici";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import {
	driversSetting,
	expectedDriverVersion,
	installedDriver,
	loadedDriverVersion,
} from "../../../test/drivers.ts";
import { retryDefaults } from "../src/options.ts";
import { retryInterceptor } from "../src/retry.ts";

const drivers = driversSetting();
const version = loadedDriverVersion("undici", undici);

type DispatchHandler = Dispatcher.DispatchHandler;
type DispatchController = Dispatcher.DispatchController;
type DispatchOptions = Dispatcher.DispatchOptions;
type Interceptor = Dispatcher.DispatcherComposeInterceptor;

let server: TestHttpServer;
/** Requests to /flaky reset the connection (RST, before any response byte) this many more times. */
let flakyResets = 0;
const dispatchers: Dispatcher[] = [];

beforeAll(async () => {
	server = await startHttpServer();
	server.route("/flaky", (req, res) => {
		if (flakyResets > 0) {
			flakyResets -= 1;
			req.socket.resetAndDestroy();
			return;
		}
		res.end("recovered");
	});
});

afterEach(async () => {
	flakyResets = 0;
	await Promise.allSettled(dispatchers.splice(0).map((dispatcher) => dispatcher.destroy()));
	server.resetStats();
});

afterAll(async () => {
	await server.close();
});

/** Dispatchers made by a test are destroyed after it. */
const track = <T extends Dispatcher>(dispatcher: T): T => {
	dispatchers.push(dispatcher);
	return dispatcher;
};

/** Subscribes to a channel for the duration of the test file's current test (unsubscribed in `finally`). */
const listen = (channels: string[]) => {
	const seen: { channel: string; message: Record<string, unknown> }[] = [];
	const listeners = channels.map((channel) => {
		const listener = (message: unknown) =>
			seen.push({ channel, message: message as Record<string, unknown> });
		diagnosticsChannel.subscribe(channel, listener);
		return { channel, listener };
	});
	return {
		seen,
		of: (channel: string) => seen.filter((entry) => entry.channel === channel).map((entry) => entry.message),
		stop: () => {
			for (const { channel, listener } of listeners) diagnosticsChannel.unsubscribe(channel, listener);
		},
	};
};

const get = async (dispatcher: Dispatcher, path: string, extra: Partial<Dispatcher.RequestOptions> = {}) => {
	const { statusCode, body } = await dispatcher.request({
		origin: server.origin,
		path,
		method: "GET",
		...extra,
	});
	return { statusCode, text: await body.text() };
};

/** An interceptor that records the options of every dispatch that goes through it. */
const recorder =
	(into: DispatchOptions[]): Interceptor =>
	(dispatch) =>
		function record(opts, handler) {
			into.push(opts);
			return dispatch(opts, handler);
		};

const kOurs = Symbol("a dispatch option of ours");

/** Fails instead of hanging when `promise` does not settle within `ms`. */
const within = <T>(promise: Promise<T>, ms: number): Promise<T> =>
	Promise.race([
		promise,
		new Promise<never>((_, reject) =>
			setTimeout(() => reject(new Error(`still pending after ${ms} ms`)), ms).unref(),
		),
	]);

describe(`undici surface on undici ${version} (MIDDY_CONN_DRIVERS=${drivers})`, () => {
	it("runs on the undici the setting selects, in the tests and in the package's own import", () => {
		expect(version).toBe(expectedDriverVersion("undici"));
		// retry.ts calls interceptors.retry of the undici it imports: it must be this very copy's.
		const installed = installedDriver("undici") as unknown as typeof undici;
		const retry = vi.spyOn(installed.interceptors, "retry");
		try {
			retryInterceptor(retryDefaults);
			expect(retry).toHaveBeenCalledOnce();
		} finally {
			retry.mockRestore();
		}
	});

	describe("diagnostics channels (telemetry.ts)", () => {
		const channels = ["undici:request:create", "undici:client:connected", "undici:client:sendHeaders"];

		it.each(["Pool", "Agent"] as const)(
			"%s: request:create publishes the Request, client:connected the new socket, client:sendHeaders both",
			async (kind) => {
				const dispatcher = track(kind === "Pool" ? new Pool(server.origin) : new Agent());
				const events = listen(channels);
				try {
					expect(await get(dispatcher, "/json")).toMatchObject({ statusCode: 200 });
				} finally {
					events.stop();
				}
				const [created] = events.of("undici:request:create");
				const [connected] = events.of("undici:client:connected");
				const [sent] = events.of("undici:client:sendHeaders");
				expect(events.of("undici:request:create")).toHaveLength(1);
				if (!created || !connected || !sent) throw new Error("a channel published nothing");
				expect(created.request).toMatchObject({ path: "/json", method: "GET" });
				expect(connected.socket).toBeInstanceOf(Socket);
				expect((connected.socket as Socket).remotePort).toBe(server.port);
				expect(sent.request).toBe(created.request);
				expect(sent.socket).toBe(connected.socket);
			},
		);

		it("a reused connection: no client:connected, and client:sendHeaders carries the same socket object", async () => {
			const pool = track(new Pool(server.origin, { connections: 1 }));
			const events = listen(channels);
			try {
				await get(pool, "/json");
				// undici hands a kept-alive socket back to its pool a turn after the response ended
				await new Promise((resolve) => setImmediate(resolve));
				await get(pool, "/json");
			} finally {
				events.stop();
			}
			expect(server.stats.connections).toBe(1);
			expect(events.of("undici:client:connected")).toHaveLength(1);
			const sent = events.of("undici:client:sendHeaders");
			expect(sent).toHaveLength(2);
			expect(sent[1]?.socket).toBe(sent[0]?.socket);
			expect(sent[1]?.request).not.toBe(sent[0]?.request);
			const created = events.of("undici:request:create");
			expect(sent.map((message) => message.request)).toEqual(created.map((message) => message.request));
		});

		it("request:create runs in the async context of the dispatch, also for a request that waited in the pool's queue", async () => {
			const pool = track(new Pool(server.origin, { connections: 1 }));
			const scope = new AsyncLocalStorage<string>();
			const seen = new Map<string, string | undefined>();
			const listener = (message: unknown) => {
				const { request } = message as { request: { path: string } };
				seen.set(request.path, scope.getStore());
			};
			diagnosticsChannel.subscribe("undici:request:create", listener);
			try {
				// One connection: the second request waits in the pool's queue until the first has its answer.
				const first = scope.run("first", () => get(pool, "/slow?ms=100"));
				const second = scope.run("second", () => get(pool, "/json?queued"));
				expect(seen.get("/slow?ms=100")).toBe("first");
				expect(seen.has("/json?queued")).toBe(false);
				await Promise.all([first, second]);
			} finally {
				diagnosticsChannel.unsubscribe("undici:request:create", listener);
			}
			expect(seen.get("/json?queued")).toBe("second");
		});
	});

	describe("compose (shared-dispatcher.ts)", () => {
		it("applies the first interceptor innermost, and each sees the dispatch options' own symbol keys", async () => {
			const order: string[] = [];
			const named =
				(name: string): Interceptor =>
				(dispatch) =>
					function named(opts, handler) {
						order.push(`${name}:${String((opts as unknown as Record<symbol, unknown>)[kOurs])}`);
						return dispatch(opts, handler);
					};
			const composed = track(new Pool(server.origin)).compose(named("inner"), named("outer"));
			const { body } = await composed.request({
				path: "/json",
				method: "GET",
				[kOurs]: "tag",
			} as DispatchOptions);
			await body.dump();
			expect(order).toEqual(["outer:tag", "inner:tag"]);
		});

		it("the composed dispatcher reports the pool's closed and destroyed", async () => {
			const closing = track(new Pool(server.origin)).compose(recorder([]));
			const state = (dispatcher: Dispatcher) =>
				dispatcher as Dispatcher & { closed: boolean; destroyed: boolean };
			expect(state(closing)).toMatchObject({ closed: false, destroyed: false });
			await closing.close();
			expect(state(closing).closed).toBe(true);
			const destroying = track(new Agent()).compose(recorder([]));
			await destroying.destroy();
			expect(state(destroying).destroyed).toBe(true);
		});

		it("Pool and Agent accept the settings http-pool creates them with", async () => {
			const settings = {
				connections: 2,
				keepAliveTimeout: 4000,
				keepAliveMaxTimeout: 600_000,
				connectTimeout: 3000,
				headersTimeout: 10_000,
				bodyTimeout: 10_000,
				allowH2: false,
				connect: { rejectUnauthorized: true },
			};
			expect(await get(track(new Pool(server.origin, settings)), "/json")).toMatchObject({ statusCode: 200 });
			expect(await get(track(new Agent(settings)), "/json")).toMatchObject({ statusCode: 200 });
		});
	});

	describe("interceptors.retry (retry.ts)", () => {
		const replayable = ["ECONNRESET", "EPIPE", "UND_ERR_SOCKET"];
		type Decision = NonNullable<NonNullable<Parameters<typeof interceptors.retry>[0]>["retry"]>;

		const retrying = (retry: Decision, inner: DispatchOptions[] = []) =>
			track(new Pool(server.origin)).compose(
				recorder(inner),
				interceptors.retry({
					retry,
					statusCodes: [],
					methods: ["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"],
					errorCodes: replayable,
				}),
			);

		it("replays a GET reset before any response byte, asking our decision (counter 1, our options)", async () => {
			flakyResets = 1;
			const asked: { code: unknown; counter: number; ours: unknown; method: unknown }[] = [];
			const inner: DispatchOptions[] = [];
			const dispatcher = retrying((error, { state, opts }, callback) => {
				asked.push({
					code: (error as { code?: unknown }).code,
					counter: state.counter,
					ours: (opts as unknown as Record<symbol, unknown>)[kOurs],
					method: opts.method,
				});
				callback(null);
			}, inner);
			const { statusCode, body } = await dispatcher.request({
				path: "/flaky",
				method: "GET",
				[kOurs]: "tag",
			} as DispatchOptions);
			expect(statusCode).toBe(200);
			expect(await body.text()).toBe("recovered");
			expect(asked).toHaveLength(1);
			expect(replayable).toContain(asked[0]?.code);
			expect(asked[0]).toMatchObject({ counter: 1, ours: "tag", method: "GET" });
			// The replay is dispatched again through the interceptors inside retry, with our option kept.
			expect(inner.map((opts) => (opts as unknown as Record<symbol, unknown>)[kOurs])).toEqual([
				"tag",
				"tag",
			]);
			expect(server.receivedCount("GET", "/flaky")).toBe(2);
		});

		it("counts the replays: counter 2 on the second failure in a row", async () => {
			flakyResets = 2;
			const counters: number[] = [];
			const dispatcher = retrying((_error, { state }, callback) => {
				counters.push(state.counter);
				callback(null);
			});
			expect(await get(dispatcher, "/flaky")).toEqual({ statusCode: 200, text: "recovered" });
			expect(counters).toEqual([1, 2]);
		});

		it("gives the caller the error our decision passes back, and does not replay", async () => {
			flakyResets = 1;
			const dispatcher = retrying((error, _context, callback) => callback(error));
			const failed = await get(dispatcher, "/flaky").then(
				() => undefined,
				(error: unknown) => error,
			);
			expect(replayable).toContain((failed as { code?: unknown }).code);
			expect(server.receivedCount("GET", "/flaky")).toBe(1);
		});

		it("statusCodes: [] hands a 503 to the caller as a response, without asking our decision", async () => {
			const decision = vi.fn<Decision>((_error, _context, callback) => callback(null));
			expect(await get(retrying(decision), "/status/503")).toMatchObject({ statusCode: 503 });
			expect(decision).not.toHaveBeenCalled();
			expect(server.receivedCount("GET", "/status/503")).toBe(1);
		});

		it("an abort while our decision waits fails the request at once (the timer we return is cancelled)", async () => {
			flakyResets = 1;
			let timer: NodeJS.Timeout | undefined;
			let decided: () => void = () => {};
			const asked = new Promise<void>((resolve) => {
				decided = resolve;
			});
			const dispatcher = retrying((_error, _context, callback) => {
				timer = setTimeout(() => callback(null), 10_000);
				decided();
				return timer as unknown as undefined;
			});
			const abort = new AbortController();
			const started = Date.now();
			const request = get(dispatcher, "/flaky", { signal: abort.signal }).then(
				() => "answered",
				(error: unknown) => error,
			);
			await asked;
			const cleared = vi.spyOn(globalThis, "clearTimeout");
			try {
				abort.abort(new Error("the invocation ended"));
				const outcome = await request;
				expect(outcome).toBeInstanceOf(Error);
				expect(Date.now() - started).toBeLessThan(2000);
				expect(cleared).toHaveBeenCalledWith(timer);
			} finally {
				cleared.mockRestore();
				clearTimeout(timer);
			}
			expect(server.receivedCount("GET", "/flaky")).toBe(1);
		});
	});

	describe("a Dispatcher of our own (invocation-dispatcher.ts)", () => {
		/** Forwards to `target`, like InvocationDispatcher; wraps handlers written for undici ≤ 7. */
		class Forwarding extends Dispatcher {
			readonly handlers: { legacy: boolean }[] = [];
			readonly target: Dispatcher;
			constructor(target: Dispatcher) {
				super();
				this.target = target;
			}
			override dispatch(opts: DispatchOptions, handler: DispatchHandler): boolean {
				const legacy = typeof handler?.onRequestStart !== "function";
				this.handlers.push({ legacy });
				const wrapper = Dispatcher1Wrapper as unknown as { wrapHandler(handler: unknown): DispatchHandler };
				return this.target.dispatch(opts, legacy ? wrapper.wrapHandler(handler) : handler);
			}
			override close(): Promise<void> {
				return Promise.resolve();
			}
			override destroy(): Promise<void> {
				return Promise.resolve();
			}
		}

		it("works with undici's request(), which hands it a current handler", async () => {
			const own = new Forwarding(track(new Pool(server.origin)));
			const { statusCode, body } = await undici.request(`${server.origin}/json`, { dispatcher: own });
			expect(statusCode).toBe(200);
			expect(await body.json()).toMatchObject({ ok: true });
			expect(own.handlers).toEqual([{ legacy: false }]);
		});

		it("works with undici's fetch()", async () => {
			const own = new Forwarding(track(new Pool(server.origin)));
			const response = await undici.fetch(`${server.origin}/json`, { dispatcher: own });
			expect(response.status).toBe(200);
			expect(await response.json()).toMatchObject({ ok: true });
		});

		it("works with Node's own fetch, whose handlers Dispatcher1Wrapper.wrapHandler adapts when they are legacy", async () => {
			const own = new Forwarding(track(new Pool(server.origin)));
			const response = await fetch(`${server.origin}/json`, { dispatcher: own } as RequestInit);
			expect(response.status).toBe(200);
			expect(await response.json()).toMatchObject({ ok: true });
			expect(own.handlers).toHaveLength(1);
		});

		it("Dispatcher1Wrapper.wrapHandler adapts a handler written for undici ≤ 7 (onConnect, onHeaders, ...)", async () => {
			const own = new Forwarding(track(new Pool(server.origin)));
			const calls: string[] = [];
			const chunks: Buffer[] = [];
			const done = new Promise<void>((resolve, reject) => {
				own.dispatch({ origin: server.origin, path: "/json", method: "GET" }, {
					onConnect: () => calls.push("onConnect"),
					onHeaders: (statusCode: number) => {
						calls.push(`onHeaders ${statusCode}`);
						return true;
					},
					onData: (chunk: Buffer) => {
						chunks.push(chunk);
						return true;
					},
					onComplete: () => {
						calls.push("onComplete");
						resolve();
					},
					onError: reject,
				} as unknown as DispatchHandler);
			});
			await within(done, 5000);
			expect(own.handlers).toEqual([{ legacy: true }]);
			expect(calls).toEqual(["onConnect", "onHeaders 200", "onComplete"]);
			expect(JSON.parse(Buffer.concat(chunks).toString("utf8"))).toMatchObject({ ok: true });
		});
	});

	describe("the handler and controller API (tracked-request.ts)", () => {
		it("calls onRequestStart, onResponseStart (parsed headers), onResponseData and onResponseEnd, with a controller", async () => {
			const pool = track(new Pool(server.origin));
			const calls: string[] = [];
			let controllerSeen: DispatchController | undefined;
			let headersSeen: Record<string, unknown> | undefined;
			let received = 0;
			await new Promise<void>((resolve, reject) => {
				pool.dispatch(
					{ origin: server.origin, path: "/large?bytes=100000", method: "GET" },
					{
						onRequestStart(controller) {
							calls.push("onRequestStart");
							controllerSeen = controller;
						},
						onResponseStart(_controller, statusCode, headers) {
							calls.push(`onResponseStart ${statusCode}`);
							headersSeen = headers as Record<string, unknown>;
						},
						onResponseData(_controller, chunk) {
							received += chunk.length;
						},
						onResponseEnd() {
							calls.push("onResponseEnd");
							resolve();
						},
						onResponseError(_controller, error) {
							reject(error);
						},
					},
				);
			});
			expect(calls).toEqual(["onRequestStart", "onResponseStart 200", "onResponseEnd"]);
			expect(received).toBe(100_000);
			expect(headersSeen?.["content-length"]).toBe("100000");
			const controller = controllerSeen as DispatchController;
			for (const method of ["abort", "pause", "resume"] as const)
				expect(controller[method]).toBeTypeOf("function");
			expect(controller).toMatchObject({ aborted: false, paused: false });
			expect("reason" in controller && "rawHeaders" in controller && "rawTrailers" in controller).toBe(true);
		});

		it("controller.pause() stops the data until resume(); abort(reason) fails the request with that reason", async () => {
			const pool = track(new Pool(server.origin));
			const reason = new Error("taken over at the end of the invocation");
			let chunks = 0;
			const failed = await new Promise<unknown>((resolve) => {
				pool.dispatch(
					{ origin: server.origin, path: "/large?bytes=4000000", method: "GET" },
					{
						onRequestStart() {},
						onResponseStart(controller) {
							controller.pause();
							expect(controller.paused).toBe(true);
							setTimeout(() => {
								// Paused: nothing has been delivered yet.
								expect(chunks).toBe(0);
								controller.resume();
							}, 50);
						},
						onResponseData(controller) {
							chunks += 1;
							if (chunks === 3) {
								controller.abort(reason);
								expect(controller.aborted).toBe(true);
								expect(controller.reason).toBe(reason);
							}
						},
						onResponseEnd() {
							resolve("ended");
						},
						onResponseError(_controller, error) {
							resolve(error);
						},
					},
				);
			});
			expect(failed).toBe(reason);
			expect(chunks).toBe(3);
		});

		it("a TLS handshake that never completes fails with UND_ERR_CONNECT_TIMEOUT at connectTimeout", async () => {
			const silent: LoopbackServer = await startSilentServer();
			try {
				const pool = track(new Pool(`https://127.0.0.1:${silent.port}`, { connectTimeout: 200 }));
				const started = Date.now();
				const failed = await pool.request({ path: "/", method: "GET" }).then(
					() => undefined,
					(error: unknown) => error,
				);
				expect(failed).toMatchObject({ code: "UND_ERR_CONNECT_TIMEOUT" });
				expect(Date.now() - started).toBeLessThan(2000);
			} finally {
				await silent.close();
			}
		});
	});
});
