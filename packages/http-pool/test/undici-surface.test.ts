// What @middy-conn/http-pool relies on in undici, each piece exercised on its own against real undici objects and a
// real HTTP server on 127.0.0.1. First what undici-adapter.ts holds, beyond undici's typed API, one `describe` per
// reliance its header lists (numbered the same): the legacy handler wrapper, HTTP/1.1 for a legacy handler, the
// diagnostics channels, the async context a Request is created in, symbol keys of dispatch options, the retry
// policy's timer, a composed dispatcher's state, and the keys undici's connector reads. Then the typed API used as
// documented: compose() and its order, the retry interceptor retry.ts configures, a Dispatcher subclass with undici's
// request() and fetch (invocation-dispatcher.ts), and the handler and controller API tracked-request.ts implements.
// An undici release that changes one of them fails the test named after it, not some distant behaviour test.
//
// Run on the latest undici (the lockfile's) and, with MIDDY_CONN_DRIVERS=floor, on the lowest the dependency range
// allows (.ci/run runs both). The first test checks which one this run really loaded.
import { readFileSync } from "node:fs";
import { createSecureServer } from "node:http2";
import { createRequire } from "node:module";
import type { AddressInfo } from "node:net";
import { Socket } from "node:net";
import { dirname, join } from "node:path";
import { tlsOptionNames } from "@middy-conn/lifecycle/internal";
import {
	createSelfSignedCertificate,
	type LoopbackServer,
	startHttpServer,
	startSilentServer,
	type TestHttpServer,
} from "@middy-conn/test-harness";
import * as undici from "undici";
import { Agent, Dispatcher, interceptors, Pool } from "undici";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import {
	driversSetting,
	expectedDriverVersion,
	installedDriver,
	loadedDriverVersion,
} from "../../../test/drivers.ts";
import { retryDefaults } from "../src/options.ts";
import { retryInterceptor } from "../src/retry.ts";
import {
	asCurrentHandler,
	dispatchTag,
	forLegacyHandler,
	isClosed,
	onHeadersSent,
	onRequestCreate,
	onSocketConnected,
	replayAfter,
	requestScope,
	tagDispatch,
	undiciConnectorKeys,
} from "../src/undici-adapter.ts";

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

/** What the adapter's three channel subscriptions report, until `stop()` (called in the test's `finally`). */
const listen = () => {
	const created: object[] = [];
	const connected: object[] = [];
	const sent: { request: object; socket: object | undefined }[] = [];
	const stops = [
		onRequestCreate((request) => created.push(request)),
		onSocketConnected((socket) => connected.push(socket)),
		onHeadersSent((request, socket) => sent.push({ request, socket })),
	];
	return {
		created,
		connected,
		sent,
		stop: () => {
			for (const stop of stops) stop();
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
		// The two runs (latest, floor) test two different versions: a floor equal to the latest would test one.
		expect(expectedDriverVersion("undici", "floor")).not.toBe(expectedDriverVersion("undici", "latest"));
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

	describe("1. asCurrentHandler: a Dispatcher of our own (invocation-dispatcher.ts) and its handlers", () => {
		/** Forwards to `target`, like InvocationDispatcher; wraps handlers written for undici ≤ 7 (HTTP/1.1 only). */
		class Forwarding extends Dispatcher {
			readonly handlers: { legacy: boolean }[] = [];
			readonly target: Dispatcher;
			constructor(target: Dispatcher) {
				super();
				this.target = target;
			}
			override dispatch(opts: DispatchOptions, handler: DispatchHandler): boolean {
				const { handler: current, legacy } = asCurrentHandler(handler);
				this.handlers.push({ legacy });
				return this.target.dispatch(legacy ? forLegacyHandler({ ...opts }) : opts, current);
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

		it("works with Node's own fetch (its bundled undici's handlers, adapted when they are legacy)", async () => {
			const own = new Forwarding(track(new Pool(server.origin)));
			const response = await fetch(`${server.origin}/json`, { dispatcher: own } as RequestInit);
			expect(response.status).toBe(200);
			expect(await response.json()).toMatchObject({ ok: true });
			expect(own.handlers).toHaveLength(1);
		});

		it("adapts a handler written for undici ≤ 7 (onConnect, onHeaders, ...) with Dispatcher1Wrapper.wrapHandler", async () => {
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

	describe("2. forLegacyHandler: a legacy handler's request stays on HTTP/1.1", () => {
		it("an Agent that negotiates HTTP/2 sends it over HTTP/1.1, and other requests over HTTP/2", async () => {
			const { key, cert } = await createSelfSignedCertificate();
			const h2 = createSecureServer({ key, cert, allowHTTP1: true }, (req, res) => res.end(req.httpVersion));
			await new Promise<void>((resolve) => h2.listen(0, "127.0.0.1", resolve));
			const agent = new Agent({ allowH2: true, connect: { ca: cert } });
			try {
				const origin = `https://127.0.0.1:${(h2.address() as AddressInfo).port}`;
				const versionOf = async (opts: Dispatcher.RequestOptions) => {
					const { body } = await agent.request(opts);
					return body.text();
				};
				expect(await versionOf({ origin, path: "/", method: "GET" })).toBe("2.0");
				expect(await versionOf(forLegacyHandler({ origin, path: "/", method: "GET" }))).toBe("1.1");
			} finally {
				// The agent's sessions first: the server's close waits for them.
				await agent.destroy();
				await new Promise<void>((resolve) => h2.close(() => resolve()));
			}
		});
	});

	describe("3. onRequestCreate, onSocketConnected, onHeadersSent: undici's diagnostics channels (telemetry.ts)", () => {
		it.each(["Pool", "Agent"] as const)(
			"%s: request:create publishes the Request, client:connected the new socket, client:sendHeaders both",
			async (kind) => {
				const dispatcher = track(kind === "Pool" ? new Pool(server.origin) : new Agent());
				const events = listen();
				try {
					expect(await get(dispatcher, "/json")).toMatchObject({ statusCode: 200 });
				} finally {
					events.stop();
				}
				expect(events.created).toHaveLength(1);
				const [created] = events.created;
				const [connected] = events.connected;
				const [sent] = events.sent;
				if (!created || !connected || !sent) throw new Error("a channel published nothing");
				expect(created).toMatchObject({ path: "/json", method: "GET" });
				expect(connected).toBeInstanceOf(Socket);
				expect((connected as Socket).remotePort).toBe(server.port);
				expect(sent.request).toBe(created);
				expect(sent.socket).toBe(connected);
			},
		);

		it("a reused connection: no client:connected, and client:sendHeaders carries the same socket object", async () => {
			const pool = track(new Pool(server.origin, { connections: 1 }));
			const events = listen();
			try {
				await get(pool, "/json");
				// undici hands a kept-alive socket back to its pool a turn after the response ended
				await new Promise((resolve) => setImmediate(resolve));
				await get(pool, "/json");
			} finally {
				events.stop();
			}
			expect(server.stats.connections).toBe(1);
			expect(events.connected).toHaveLength(1);
			expect(events.sent).toHaveLength(2);
			expect(events.sent[1]?.socket).toBe(events.sent[0]?.socket);
			expect(events.sent[1]?.request).not.toBe(events.sent[0]?.request);
			expect(events.sent.map((message) => message.request)).toEqual(events.created);
		});

		it("the returned function unsubscribes", async () => {
			const pool = track(new Pool(server.origin));
			const events = listen();
			events.stop();
			await get(pool, "/json");
			expect([events.created, events.connected, events.sent]).toEqual([[], [], []]);
		});
	});

	describe("4. requestScope: request:create runs in the async context of the dispatch", () => {
		it("at once for a request dispatched on a free connection, later for one that waited in the pool's queue", async () => {
			const pool = track(new Pool(server.origin, { connections: 1 }));
			const scope = requestScope<string>();
			const seen = new Map<string, string | undefined>();
			const stop = onRequestCreate((request) => {
				seen.set((request as { path: string }).path, scope.current());
			});
			try {
				// One connection: the second request waits in the pool's queue until the first has its answer.
				const first = scope.run("first", () => get(pool, "/slow?ms=100"));
				const second = scope.run("second", () => get(pool, "/json?queued"));
				expect(seen.get("/slow?ms=100")).toBe("first");
				expect(seen.has("/json?queued")).toBe(false);
				await Promise.all([first, second]);
			} finally {
				stop();
			}
			expect(seen.get("/json?queued")).toBe("second");
		});

		it("run(undefined, ...) hides a value of the surrounding context", async () => {
			const pool = track(new Pool(server.origin));
			const scope = requestScope<string>();
			const seen: (string | undefined)[] = [];
			const stop = onRequestCreate(() => seen.push(scope.current()));
			try {
				await scope.run("outer", () => scope.run(undefined, () => get(pool, "/json")));
			} finally {
				stop();
			}
			expect(seen).toEqual([undefined]);
		});
	});

	describe("5. tagDispatch, dispatchTag: symbol keys of the dispatch options", () => {
		it("reach every interceptor of a composed dispatcher, innermost included", async () => {
			const seen: unknown[] = [];
			const reading: Interceptor = (dispatch) =>
				function reading(opts, handler) {
					seen.push(dispatchTag(opts, kOurs));
					return dispatch(opts, handler);
				};
			const composed = track(new Pool(server.origin)).compose(reading, reading);
			const { body } = await composed.request(
				tagDispatch({ path: "/json", method: "GET" } as Dispatcher.RequestOptions, kOurs, "tag"),
			);
			await body.dump();
			expect(seen).toEqual(["tag", "tag"]);
		});

		it("reach the retry policy's opts, and each replay's dispatch", async () => {
			flakyResets = 1;
			const inner: DispatchOptions[] = [];
			const asked: unknown[] = [];
			const dispatcher = track(new Pool(server.origin)).compose(
				recorder(inner),
				interceptors.retry({
					retry: (_error, { opts }, callback) => {
						asked.push(dispatchTag(opts, kOurs));
						callback(null);
					},
					statusCodes: [],
					errorCodes: ["ECONNRESET", "EPIPE", "UND_ERR_SOCKET"],
				}),
			);
			const { body } = await dispatcher.request(
				tagDispatch({ path: "/flaky", method: "GET" } as Dispatcher.RequestOptions, kOurs, "tag"),
			);
			expect(await body.text()).toBe("recovered");
			expect(asked).toEqual(["tag"]);
			expect(inner.map((opts) => dispatchTag(opts, kOurs))).toEqual(["tag", "tag"]);
		});
	});

	describe("6. replayAfter: the retry policy's timer, cleared by undici on abort", () => {
		it("an abort while the replay waits fails the request at once, and undici clears the timer", async () => {
			flakyResets = 1;
			let timer: unknown;
			let decided: () => void = () => {};
			const asked = new Promise<void>((resolve) => {
				decided = resolve;
			});
			const dispatcher = track(new Pool(server.origin)).compose(
				interceptors.retry({
					retry: (_error, _context, callback) => {
						timer = replayAfter(10_000, callback);
						decided();
						return timer as undefined;
					},
					statusCodes: [],
					errorCodes: ["ECONNRESET", "EPIPE", "UND_ERR_SOCKET"],
				}),
			);
			const abort = new AbortController();
			const request = get(dispatcher, "/flaky", { signal: abort.signal }).then(
				() => "answered",
				(error: unknown) => error,
			);
			await asked;
			expect(timer).toBeDefined();
			const cleared = vi.spyOn(globalThis, "clearTimeout");
			try {
				abort.abort(new Error("the invocation ended"));
				expect(await within(request, 2000)).toBeInstanceOf(Error);
				expect(cleared).toHaveBeenCalledWith(timer);
			} finally {
				cleared.mockRestore();
				clearTimeout(timer as NodeJS.Timeout);
			}
			expect(server.receivedCount("GET", "/flaky")).toBe(1);
		});
	});

	describe("7. isClosed: a composed dispatcher's state", () => {
		it("is false while the pool is open, true once it is closed or destroyed (Pool and Agent)", async () => {
			const closing = track(new Pool(server.origin)).compose(recorder([]));
			expect(isClosed(closing)).toBe(false);
			await closing.close();
			expect(isClosed(closing)).toBe(true);
			const destroying = track(new Agent()).compose(recorder([]));
			expect(isClosed(destroying)).toBe(false);
			await destroying.destroy();
			expect(isClosed(destroying)).toBe(true);
		});
	});

	describe("8. undiciConnectorKeys: the keys undici's connector reads from `connect`", () => {
		// Read from the source of the undici this run loaded: a minor release that reads a new key fails here rather
		// than warning at users' cold starts that the key is a typo.
		const packageJson = createRequire(import.meta.url).resolve(
			`${drivers === "floor" ? "undici-floor" : "undici"}/package.json`,
		);
		const connectSource = () => readFileSync(join(dirname(packageJson), "lib/core/connect.js"), "utf8");

		it("reads the source of the undici this run loaded", () => {
			expect((JSON.parse(readFileSync(packageJson, "utf8")) as { version: string }).version).toBe(version);
		});

		it("lists every key buildConnector destructures or reads, beside Node's tls options", () => {
			const source = connectSource();
			const parameters = /function buildConnector\s*\(\{([^}]*)\}\)/.exec(source)?.[1];
			if (parameters === undefined) throw new Error("buildConnector's parameters not found in connect.js");
			const destructured = parameters
				.split(",")
				.map((part) => part.trim())
				.filter((part) => part !== "" && !part.startsWith("..."))
				.map((part) => part.split(":")[0]?.trim() ?? "");
			const read = [...source.matchAll(/\boptions\.(\w+)/g)].map((match) => match[1] ?? "");
			// The parse found what it should: a few keys known to be there.
			expect(destructured).toEqual(expect.arrayContaining(["allowH2", "maxCachedSessions", "timeout"]));
			expect(read).toContain("keepAlive");
			const known = new Set([...tlsOptionNames, ...undiciConnectorKeys]);
			expect([...new Set([...destructured, ...read])].filter((key) => !known.has(key))).toEqual([]);
		});
	});

	describe("compose (shared-dispatcher.ts)", () => {
		it("applies the first interceptor innermost", async () => {
			const order: string[] = [];
			const named =
				(name: string): Interceptor =>
				(dispatch) =>
					function named(opts, handler) {
						order.push(name);
						return dispatch(opts, handler);
					};
			const composed = track(new Pool(server.origin)).compose(named("inner"), named("outer"));
			const { body } = await composed.request({ path: "/json", method: "GET" });
			await body.dump();
			expect(order).toEqual(["outer", "inner"]);
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

		it("replays a GET reset before any response byte, asking our decision (counter 1, the request's options)", async () => {
			flakyResets = 1;
			const asked: { code: unknown; counter: number; method: unknown }[] = [];
			const inner: DispatchOptions[] = [];
			const dispatcher = retrying((error, { state, opts }, callback) => {
				asked.push({ code: (error as { code?: unknown }).code, counter: state.counter, method: opts.method });
				callback(null);
			}, inner);
			expect(await get(dispatcher, "/flaky")).toEqual({ statusCode: 200, text: "recovered" });
			expect(asked).toHaveLength(1);
			expect(replayable).toContain(asked[0]?.code);
			expect(asked[0]).toMatchObject({ counter: 1, method: "GET" });
			// The replay is dispatched again through the interceptors inside retry.
			expect(inner).toHaveLength(2);
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
