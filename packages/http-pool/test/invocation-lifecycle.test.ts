// The rules of the invocation lifecycle (packages/lifecycle/src/invocation.ts), as @middy-conn/http-pool keeps them
// against a real HTTP server (and a real MySQL server where the two middlewares share an invocation). Every claim
// about the wire is checked against what the SERVERS count: the requests received, the connections accepted, the
// sockets open, the rows committed. early-timeout.test.ts, leftover-requests.test.ts, wait-until.test.ts and
// streaming.test.ts each cover some of these paths; here each rule is checked on every path. The rules are
// numbered as in packages/mysql/test/invocation-lifecycle.test.ts (4 and 6 are the database's own).
import { setTimeout as delay, setImmediate } from "node:timers/promises";
import middy, { type MiddlewareObj, type Request } from "@middy/core";
import { closeMysqlPools, type MysqlContext, mysqlConnection } from "@middy-conn/mysql";
import {
	eventually,
	outcome,
	useHttpServer,
	usePoolCleanup,
	useTestDatabase,
	within,
} from "@middy-conn/test-harness/test-fixtures";
import type { RowDataPacket } from "mysql2/promise";
import type { Dispatcher, Pool } from "undici";
import { afterEach, describe, expect, it, vi } from "vitest";
import {
	closeHttpPools,
	errorCodes,
	type HttpPoolMiddleware,
	type HttpPoolOptions,
	type HttpPoolStats,
	httpPool,
} from "../src/index.ts";
import { auditRoute, type HttpContext, lambdaContext, spyLogger } from "./helpers.ts";

// After each test, in this order (after-hooks run last registered first): the pools are closed, the server's
// sockets are all gone, the database user's sessions too (killed if a failed test left some), the stats reset.
const server = useHttpServer({ routes: auditRoute() });
const { admin, db: database } = useTestDatabase("http_lifecycle", {
	tables: ["audit (id INT AUTO_INCREMENT PRIMARY KEY, tag VARCHAR(100) NOT NULL) ENGINE=InnoDB"],
	settle: "kill",
});
// a test that failed may have left sockets behind: they must not count in the next one
afterEach(async () => {
	await vi.waitFor(() => expect(server.stats.open).toBe(0));
});
usePoolCleanup(closeHttpPools, closeMysqlPools);

// --- Helpers ---

/** A handler built by Middy, called as the Lambda runtime does. */
type Invoke = (event: unknown, context: HttpContext) => Promise<unknown>;
type Outcome = { value?: unknown; error?: unknown };

const codeOf = (error: unknown): unknown => (error as { code?: unknown } | undefined)?.code;

/** Follows a promise's state as it changes: "pending" until it settles. */
const track = (promise: Promise<unknown>) => {
	const state: { now: "pending" | Outcome } = { now: "pending" };
	promise.then(
		(value) => {
			state.now = { value };
		},
		(error: unknown) => {
			state.now = { error };
		},
	);
	return state;
};

/** The outcome of a promise if it has settled by now (its callbacks given a turn of the event loop), else "pending". */
const settledBy = (promise: Promise<unknown>): Promise<Outcome | "pending"> =>
	Promise.race([outcome(promise), setImmediate("pending" as const)]);

const ctxOf = (request: Request) => request.context as unknown as HttpContext;

const invocationEnded = { code: errorCodes.invocationEnded };

/**
 * httpPool() for the test's server, recording what it reports per invocation (by context) and what it logs. A pool
 * of one by default: whatever an invocation leaves holding the connection would stall the next one.
 */
const setup = (options: HttpPoolOptions = {}, withStats = true) => {
	const reports: { context: unknown; event: unknown; stats: HttpPoolStats }[] = [];
	const logger = spyLogger();
	const middleware = httpPool({
		origin: server.origin,
		connections: 1,
		logger,
		...(withStats
			? {
					onStats: (stats: HttpPoolStats, request: Request) =>
						void reports.push({ context: request.context, event: request.event, stats }),
				}
			: {}),
		...options,
	});
	const statsOf = (context: unknown) => reports.filter((r) => r.context === context).map((r) => r.stats);
	return { middleware, logger, reports, statsOf };
};

/** A later invocation on the same pool: it is served (bounded wait), and says which connection served it. */
const nextInvocation = async (middleware: HttpPoolMiddleware): Promise<number> => {
	await setImmediate();
	const handler = middy()
		.use(middleware)
		.handler(async (_event, context) => {
			const { body } = await context.http.request({ path: "/json", method: "GET" });
			return (await body.json()) as { socketId: number };
		});
	const next = await within(handler({}, lambdaContext(10_000)), 3000);
	expect(next.settled).toBe(true);
	expect(next.error).toBeUndefined();
	return next.value?.socketId as number;
};

// --- The rules ---

describe("1. one teardown per invocation, finished before the invocation's promise settles, on every path", () => {
	/** What the handler (or a before) does with context.http before the path is taken. */
	type Work = (context: HttpContext) => Promise<void>;
	interface PathCase {
		path: string;
		build: (middleware: HttpPoolMiddleware, work: Work) => Invoke;
		/** Lambda's remaining time for the invocation. */
		remainingMs: number;
		expected: { value: unknown } | { error: string } | { errorName: string };
		/** Graceful: what was left open is drained or aborted. At once: everything is aborted (no time to wait). */
		teardown: "graceful" | "at once";
	}
	const handlerFailed = (): never => {
		throw new Error("handler failed");
	};
	/**
	 * Middy (an early timeout 250 ms before Lambda's) with `earlier` registered before httpPool() and `later` after
	 * it, around a handler that does the work, then returns 200, throws "handler failed", or waits 5 s (Middy's abort
	 * signal ends the wait).
	 */
	const around =
		({
			earlier,
			later,
			ending = "return",
			timeoutEarlyResponse,
		}: {
			earlier?: MiddlewareObj;
			later?: MiddlewareObj;
			ending?: "return" | "throw" | "wait";
			timeoutEarlyResponse?: () => unknown;
		}): PathCase["build"] =>
		(mw, work) =>
			middy({ timeoutEarlyInMillis: 250, ...(timeoutEarlyResponse ? { timeoutEarlyResponse } : {}) })
				.use(earlier ? [earlier] : [])
				.use(mw)
				.use(later ? [later] : [])
				.handler(async (_event, context, { signal }) => {
					await work(context);
					if (ending === "throw") handlerFailed();
					if (ending === "wait") await delay(5000, undefined, { signal });
					return { statusCode: 200 };
				});
	const remapError: MiddlewareObj = {
		onError: (request) => {
			request.error = new Error("remapped");
		},
	};
	const onErrorThrows: MiddlewareObj = {
		onError: () => {
			throw new Error("onError failed");
		},
	};
	const onErrorAnswers: MiddlewareObj = { onError: () => ({ statusCode: 500 }) };
	const ordinary = { remainingMs: 10_000, teardown: "graceful" } as const;

	const paths: PathCase[] = [
		{
			path: "the handler returns",
			build: around({}),
			expected: { value: { statusCode: 200 } },
			...ordinary,
		},
		{
			path: "the handler throws",
			build: around({ ending: "throw" }),
			expected: { error: "handler failed" },
			...ordinary,
		},
		{
			path: "an after registered later throws, and the onErrors run (ours included)",
			build: around({
				later: {
					after: () => {
						throw new Error("after failed");
					},
				},
			}),
			expected: { error: "after failed" },
			...ordinary,
		},
		{
			path: "a before registered later answers early (Middy skips the handler and every after)",
			build: (mw, work) =>
				middy({ timeoutEarlyInMillis: 250 })
					.use(mw)
					.use({
						before: async (request) => {
							await work(ctxOf(request));
							return { statusCode: 304 };
						},
					})
					.handler(async () => {
						throw new Error("the handler must not run");
					}),
			expected: { value: { statusCode: 304 } },
			...ordinary,
		},
		{
			path: "an after registered later answers early (Middy skips ours)",
			build: around({ later: { after: () => ({ statusCode: 304 }) } }),
			expected: { value: { statusCode: 304 } },
			...ordinary,
		},
		{
			path: "an onError registered later answers (Middy skips ours)",
			build: around({ later: onErrorAnswers, ending: "throw" }),
			expected: { value: { statusCode: 500 } },
			...ordinary,
		},
		{
			path: "an onError registered later remaps the error, then ours runs",
			build: around({ later: remapError, ending: "throw" }),
			expected: { error: "remapped" },
			...ordinary,
		},
		{
			path: "an onError registered later throws (Middy rethrows at once, ours never runs)",
			build: around({ later: onErrorThrows, ending: "throw" }),
			expected: { error: "onError failed" },
			...ordinary,
			teardown: "at once",
		},
		{
			path: "an onError registered earlier answers, after ours ran",
			build: around({ earlier: onErrorAnswers, ending: "throw" }),
			expected: { value: { statusCode: 500 } },
			...ordinary,
		},
		{
			path: "an onError registered earlier remaps the error, after ours ran",
			build: around({ earlier: remapError, ending: "throw" }),
			expected: { error: "remapped" },
			...ordinary,
		},
		{
			path: "an onError registered earlier throws, after ours ran",
			build: around({ earlier: onErrorThrows, ending: "throw" }),
			expected: { error: "onError failed" },
			...ordinary,
		},
		{
			path: "Middy's TimeoutError while the handler still runs",
			build: around({ ending: "wait" }),
			remainingMs: 600,
			expected: { errorName: "TimeoutError" },
			teardown: "at once",
		},
		{
			path: "a timeoutEarlyResponse that returns a value (Middy runs the afters while the handler still runs)",
			build: around({ ending: "wait", timeoutEarlyResponse: () => ({ statusCode: 503 }) }),
			remainingMs: 600,
			expected: { value: { statusCode: 503 } },
			teardown: "graceful",
		},
	];
	const leftovers = [
		{ leftover: "a small body it did not read", unread: true },
		{ leftover: "a request still waiting for its response", unread: false },
	];
	// Without onStats, Middy's request is observed only from the first request on (Invocation.inUse).
	const observed = [
		{ withStats: true, observed: "onStats" },
		{ withStats: false, observed: "no onStats" },
	];
	const matrix = paths.flatMap((p) => leftovers.flatMap((l) => observed.map((o) => ({ ...p, ...l, ...o }))));

	it.each(matrix)("$path, with $leftover ($observed)", async (c) => {
		const { middleware, statsOf } = setup({}, c.withStats);
		let used: HttpContext | undefined;
		let body: Dispatcher.ResponseData["body"] | undefined;
		let waiting: ReturnType<typeof track> | undefined;
		const work: Work = async (context) => {
			used = context;
			if (c.unread) {
				// 100 kB: more than undici buffers for an unread body, so the connection stays busy until it is read
				({ body } = await context.http.request({ path: "/large?bytes=100000", method: "GET" }));
				return;
			}
			const request = context.http.request({ path: "/hang", method: "GET" });
			waiting = track(request);
			request.catch(() => {});
			await vi.waitFor(() => expect(server.receivedCount("GET", "/hang")).toBe(1));
		};
		const context = lambdaContext(c.remainingMs);

		const result = await outcome(c.build(middleware, work)({}, context)).then((r) => ({
			...r,
			// read the moment the invocation's promise settled
			reports: statsOf(context).length,
			waitingWhenSettled: waiting?.now,
			bodyWhenSettled: body?.errored,
		}));

		if ("value" in c.expected) {
			expect(result.error).toBeUndefined();
			expect(result.value).toEqual(c.expected.value);
		} else if ("error" in c.expected) {
			expect((result.error as Error | undefined)?.message).toBe(c.expected.error);
		} else {
			expect(result.error).toMatchObject({ name: c.expected.errorName });
		}
		expect(used).toBeDefined();
		const leaked = used as HttpContext;
		const firstSocket = server.received[0]?.socketId;

		// one teardown, over before the promise settled
		const drained = c.unread && c.teardown === "graceful";
		if (c.withStats) {
			expect(result.reports).toBe(1);
			expect(statsOf(context)[0]?.leftovers).toEqual(
				drained ? { dumped: 1, aborted: 0 } : { dumped: 0, aborted: 1 },
			);
		}
		if (c.unread) {
			// the caller's body stream had been taken from it (drained or aborted) when the invocation settled
			expect(codeOf(result.bodyWhenSettled)).toBe(errorCodes.invocationEnded);
			await expect(body?.text()).rejects.toMatchObject(invocationEnded);
		} else {
			// the request still waiting had already failed when the invocation settled
			expect(result.waitingWhenSettled).not.toBe("pending");
			expect(codeOf((result.waitingWhenSettled as Outcome | undefined)?.error)).toBe(
				errorCodes.invocationEnded,
			);
		}

		// after the end, context.http and waitUntil refuse
		await expect(leaked.http.request({ path: "/json", method: "GET" })).rejects.toMatchObject(
			invocationEnded,
		);
		expect(() => leaked.waitUntil(async () => {})).toThrow(
			expect.objectContaining({ code: "MIDDY_CONN_INVOCATION_ENDED" }),
		);
		expect(server.receivedCount("GET", "/json")).toBe(0);

		if (drained) {
			// drained: the socket went back to the pool of one, and the next invocation is served on it
			expect(await nextInvocation(middleware)).toBe(firstSocket);
			expect(server.stats.connections).toBe(1);
		} else {
			// aborted: the server sees its socket closed; the next invocation is served on a new one
			await vi.waitFor(() => expect(server.stats.open).toBe(0));
			expect(await nextInvocation(middleware)).not.toBe(firstSocket);
			expect(server.stats.connections).toBe(2);
		}
		// and never a second report, later
		expect(statsOf(context)).toHaveLength(c.withStats ? 1 : 0);
	});
});

describe("2. background tasks first: a task handed to context.waitUntil is delivered before the invocation settles", () => {
	type Ctx = HttpContext & MysqlContext;
	const alone = "httpPool() alone";
	const mysqlFirst = "mysqlConnection() then httpPool()";
	const httpFirst = "httpPool() then mysqlConnection()";
	const paths = [
		"the ordinary path",
		"an after registered later answers early",
		"a before registered later answers early",
	] as const;
	type Path = (typeof paths)[number];
	const expectedStatus = (path: Path) =>
		path === "the ordinary path" ? 200 : path === "an after registered later answers early" ? 304 : 202;

	const databaseMiddleware = (logger: ReturnType<typeof spyLogger>, onStats?: (request: Request) => void) =>
		mysqlConnection({
			config: {
				host: database.host,
				port: database.port,
				user: database.user,
				password: database.password,
				database: database.database,
			},
			logger,
			...(onStats ? { onStats: (_stats: unknown, request: Request) => onStats(request) } : {}),
		});

	/**
	 * The middlewares in this order, then the path's own middleware (registered later). `handOver` is called by the
	 * handler, or by the before that answers early (the handler then never runs).
	 */
	const build = (middlewares: MiddlewareObj[], path: Path, handOver: (context: Ctx) => void) => {
		const handler = middy({ timeoutEarlyInMillis: 250 });
		for (const m of middlewares) handler.use(m);
		if (path === "an after registered later answers early")
			handler.use({ after: () => ({ statusCode: 304 }) });
		if (path === "a before registered later answers early") {
			handler.use({
				before: (request) => {
					handOver(request.context as unknown as Ctx);
					return { statusCode: 202 };
				},
			});
		}
		const ran = { handler: false };
		handler.handler(async (_event, context) => {
			ran.handler = true;
			handOver(context as unknown as Ctx);
			return { statusCode: 200 };
		});
		return { invoke: handler as unknown as Invoke, ran };
	};

	it.each([alone, mysqlFirst, httpFirst].flatMap((order) => paths.map((path) => ({ order, path }))))(
		"$order, $path: a task that uses the database (if any) then context.http",
		async ({ order, path }) => {
			const { middleware, statsOf, logger } = setup({ connections: 4 });
			const mysqlLogger = spyLogger();
			const db = order === alone ? undefined : databaseMiddleware(mysqlLogger);
			// a while after it was handed over, the task uses the database (if any), then POSTs what it read
			const task = (context: Ctx) => async () => {
				await delay(100);
				let answer = "no database";
				if (db) {
					const [rows] = await context.db.query<RowDataPacket[]>("SELECT 40 + 2 AS answer");
					answer = String(rows[0]?.answer);
				}
				const { body } = await context.http.request({ path: "/audit", method: "POST", body: answer });
				await body.dump();
			};
			const middlewares = (
				db === undefined ? [middleware] : order === mysqlFirst ? [db, middleware] : [middleware, db]
			) as MiddlewareObj[];
			const { invoke, ran } = build(middlewares, path, (context) => context.waitUntil(task(context)));
			const context = lambdaContext(10_000);

			const result = await outcome(invoke({}, context)).then((r) => ({
				...r,
				// read the moment the invocation's promise settled
				audits: server.received.filter((req) => req.path === "/audit").map((req) => req.body),
				reports: statsOf(context).map((s) => s.background),
			}));

			expect(result.error).toBeUndefined();
			expect(result.value).toEqual({ statusCode: expectedStatus(path) });
			expect(ran.handler).toBe(path !== "a before registered later answers early");
			expect(result.audits).toEqual([db ? "42" : "no database"]);
			expect(result.reports).toEqual([{ finished: 1, failed: 0, aborted: 0 }]);
			expect(logger.warn).not.toHaveBeenCalled();
			expect(logger.error).not.toHaveBeenCalled();
			expect(mysqlLogger.warn).not.toHaveBeenCalled();
			expect(mysqlLogger.error).not.toHaveBeenCalled();
			// the database connection (scoped mode) was closed too
			if (db) expect(await admin.settleConnections(database.user, 0)).toBe(0);
		},
	);

	// Resources close newest first. A task may be handed over while they close (here: by the onStats of the one
	// that closes first, which ships its counters in the background); it may still use the ones not closed yet.
	it.each([mysqlFirst, httpFirst].flatMap((order) => paths.map((path) => ({ order, path }))))(
		"$order, $path: a task handed over during the teardown, by the first middleware to close, uses the other one",
		async ({ order, path }) => {
			const tag = `${order === mysqlFirst ? "m" : "h"}-${paths.indexOf(path)}-${Date.now()}`;
			const logger = spyLogger();
			const mysqlLogger = spyLogger();
			const handedOver: string[] = [];
			// mysqlConnection() then httpPool(): httpPool() closes first, its task writes to the database
			const writeRow = (request: Request) => {
				handedOver.push("by httpPool()'s onStats");
				const context = request.context as unknown as Ctx;
				context.waitUntil(async () => {
					await delay(50);
					await context.db.query("INSERT INTO audit (tag) VALUES (?)", [tag]);
				});
			};
			// httpPool() then mysqlConnection(): mysqlConnection() closes first, its task POSTs
			const postAudit = (request: Request) => {
				handedOver.push("by mysqlConnection()'s onStats");
				const context = request.context as unknown as Ctx;
				context.waitUntil(async () => {
					await delay(50);
					const { body } = await context.http.request({ path: "/audit", method: "POST", body: tag });
					await body.dump();
				});
			};
			const http = httpPool({
				origin: server.origin,
				connections: 4,
				logger,
				...(order === mysqlFirst
					? { onStats: (_stats: HttpPoolStats, request: Request) => writeRow(request) }
					: {}),
			});
			const db = databaseMiddleware(mysqlLogger, order === httpFirst ? postAudit : undefined);
			const { invoke } = build(
				(order === mysqlFirst ? [db, http] : [http, db]) as MiddlewareObj[],
				path,
				() => {},
			);

			const result = await outcome(invoke({}, lambdaContext(10_000))).then(async (r) => ({
				...r,
				// read the moment the invocation's promise settled
				audits: server.received.filter((req) => req.path === "/audit").map((req) => req.body),
				rows: (
					await admin.query<RowDataPacket[]>(`SELECT tag FROM \`${database.database}\`.audit WHERE tag = ?`, [
						tag,
					])
				).map((row) => String(row.tag)),
			}));

			expect(result.error).toBeUndefined();
			expect(result.value).toEqual({ statusCode: expectedStatus(path) });
			expect(handedOver).toHaveLength(1);
			if (order === mysqlFirst) expect(result.rows).toEqual([tag]);
			else expect(result.audits).toEqual([tag]);
			for (const spy of [logger, mysqlLogger]) {
				expect(spy.warn).not.toHaveBeenCalled();
				expect(spy.error).not.toHaveBeenCalled();
			}
			// the connection the late task opened was closed too
			expect(await admin.settleConnections(database.user, 0)).toBe(0);
		},
	);
});

describe("3. nothing opened after teardown began is left open", () => {
	const earlyPaths = [
		{ path: "an after registered later answered early", from: "after" },
		{ path: "a before registered later answered early", from: "before" },
	] as const;
	const tasks = [
		{ task: "awaits its request", awaits: true },
		{ task: "does not await its request", awaits: false },
	];
	const matrix = earlyPaths.flatMap((p) =>
		tasks.flatMap((t) => [
			{ ...p, ...t, withStats: true, observed: "onStats" },
			{ ...p, ...t, withStats: false, observed: "no onStats" },
		]),
	);

	it.each(matrix)(
		"a background task that sends its first request once $path: a task that $task, $observed",
		async ({ from, awaits, withStats }) => {
			const { middleware, reports, logger } = setup({ connections: 4 }, withStats);
			let answered = false;
			let sent: ReturnType<typeof track> | undefined;
			let sentAfterAnswer: boolean | undefined;
			const task = (context: HttpContext) => async () => {
				// the early response begins the teardown: only then does the task first use context.http
				expect(await eventually(() => answered)).toBe(true);
				sentAfterAnswer = answered;
				if (awaits) {
					const { body } = await context.http.request({ path: "/audit", method: "POST", body: "late" });
					await body.dump();
					return;
				}
				// fire and forget: the task ends while its request still waits for an answer
				const request = context.http.request({ path: "/hang", method: "POST", body: "late" });
				sent = track(request);
				request.catch(() => {});
				expect(await eventually(() => server.receivedCount("POST", "/hang") === 1)).toBe(true);
			};
			const handler = middy({ timeoutEarlyInMillis: 250 }).use(middleware);
			if (from === "after") {
				handler.use({
					after: () => {
						answered = true;
						return { statusCode: 304 };
					},
				});
			} else {
				handler.use({
					before: (request) => {
						ctxOf(request).waitUntil(task(ctxOf(request)));
						answered = true;
						return { statusCode: 304 };
					},
				});
			}
			handler.handler(async (_event, context) => {
				context.waitUntil(task(context));
				return { statusCode: 200 };
			});
			const context = lambdaContext(10_000);

			const result = await outcome(handler({}, context)).then((r) => ({
				...r,
				reports: reports.map((s) => s.stats),
				audits: server.receivedCount("POST", "/audit"),
				sentWhenSettled: sent?.now,
			}));

			expect(result.error).toBeUndefined();
			expect(result.value).toEqual({ statusCode: 304 });
			expect(sentAfterAnswer).toBe(true);
			if (awaits) {
				// delivered, before the invocation settled
				expect(result.audits).toBe(1);
				if (withStats) {
					expect(result.reports).toEqual([
						expect.objectContaining({
							requests: 1,
							leftovers: { dumped: 0, aborted: 0 },
							background: { finished: 1, failed: 0, aborted: 0 },
						}),
					]);
				}
				expect(logger.warn).not.toHaveBeenCalled();
			} else {
				// its request, first sent during the teardown, was aborted by it: before the invocation settled
				expect(result.sentWhenSettled).not.toBe("pending");
				expect(codeOf((result.sentWhenSettled as Outcome | undefined)?.error)).toBe(
					errorCodes.invocationEnded,
				);
				if (withStats) {
					expect(result.reports).toEqual([
						expect.objectContaining({
							requests: 1,
							leftovers: { dumped: 0, aborted: 1 },
							background: { finished: 1, failed: 0, aborted: 0 },
						}),
					]);
				}
				// and its socket is closed on the server
				await vi.waitFor(() => expect(server.stats.open).toBe(0));
			}
			// the invocation has ended: context.http refuses
			await expect(context.http.request({ path: "/json", method: "GET" })).rejects.toMatchObject(
				invocationEnded,
			);
			expect(server.receivedCount("GET", "/json")).toBe(0);
		},
	);

	it.each([
		{ when: "in flight when the onError threw", inFlight: true, withStats: true, observed: "onStats" },
		{ when: "in flight when the onError threw", inFlight: true, withStats: false, observed: "no onStats" },
		{ when: "sent after the onError threw", inFlight: false, withStats: true, observed: "onStats" },
		{ when: "sent after the onError threw", inFlight: false, withStats: false, observed: "no onStats" },
	])(
		"after an onError threw, a background task's request $when fails with MIDDY_CONN_HTTP_INVOCATION_ENDED, the task is reported aborted, and no socket is left open ($observed)",
		async ({ inFlight, withStats }) => {
			const { middleware, reports, logger } = setup({ connections: 4 }, withStats);
			let threw = false;
			let taskRequest: Promise<unknown> | undefined;
			let taskSignal: AbortSignal | undefined;
			const handler = middy({ timeoutEarlyInMillis: 250 })
				.use(middleware)
				.use({
					onError: () => {
						threw = true;
						throw new Error("onError failed");
					},
				})
				.handler(async (_event, context) => {
					context.waitUntil(async (signal: AbortSignal) => {
						taskSignal = signal;
						if (!inFlight) expect(await eventually(() => threw)).toBe(true);
						taskRequest = context.http.request({ path: "/hang", method: "POST", body: "audit" });
						await taskRequest;
					});
					if (inFlight) await vi.waitFor(() => expect(server.receivedCount("POST", "/hang")).toBe(1));
					throw new Error("handler failed");
				});

			const result = await outcome(handler({}, lambdaContext(10_000)));

			expect((result.error as Error | undefined)?.message).toBe("onError failed");
			// the task was aborted at once, and the log says so
			expect(taskSignal?.aborted).toBe(true);
			expect(logger.warn).toHaveBeenCalledWith(
				expect.stringMatching(/1 background task\(s\) aborted because an onError middleware threw/),
				expect.anything(),
			);
			if (withStats) {
				expect(reports.map((r) => r.stats)).toEqual([
					expect.objectContaining({
						leftovers: { dumped: 0, aborted: inFlight ? 1 : 0 },
						background: { finished: 0, failed: 0, aborted: 1 },
					}),
				]);
			}
			// its request fails visibly (in flight: aborted; later: refused)
			expect(await eventually(() => taskRequest !== undefined)).toBe(true);
			const late = await within(taskRequest as Promise<unknown>, 2000);
			expect(late.settled).toBe(true);
			expect(codeOf(late.error)).toBe(errorCodes.invocationEnded);
			if (inFlight) {
				// the server sees its socket closed
				await vi.waitFor(() => expect(server.stats.open).toBe(0));
			} else {
				// refused: it never reached the server, and opened nothing
				expect(server.receivedCount("POST", "/hang")).toBe(0);
				expect(server.stats.connections).toBe(0);
			}
			expect(server.stats.open).toBe(0);
		},
	);
});

describe("5. a timeout is acted on the moment Middy raises it", () => {
	it.each([
		{ withStats: true, observed: "onStats" },
		{ withStats: false, observed: "no onStats" },
	])(
		"an onError that runs before ours finds the handler's in-flight request already aborted and its socket closed ($observed)",
		async ({ withStats }) => {
			const { middleware, statsOf } = setup({}, withStats);
			let inFlight: Promise<unknown> | undefined;
			let seen: { reports: number; request: Outcome | "pending"; socketClosed: boolean } | undefined;
			// Middy runs the onErrors in the reverse order of registration: this one runs before ours
			const handler = middy({ timeoutEarlyInMillis: 250 })
				.use(middleware)
				.use({
					onError: async (request) => {
						const reports = statsOf(request.context).length;
						const requestNow = await settledBy(inFlight as Promise<unknown>);
						const socketClosed = await eventually(() => server.stats.open === 0, { timeoutMs: 1000 });
						seen = { reports, request: requestNow, socketClosed };
					},
				})
				.handler(async (_event, context) => {
					inFlight = context.http.request({ path: "/hang", method: "GET" });
					return inFlight;
				});
			const context = lambdaContext(600);

			const result = await outcome(handler({}, context));

			expect(result.error).toMatchObject({ name: "TimeoutError" });
			expect(server.receivedCount("GET", "/hang")).toBe(1);
			// ours had not run yet
			expect(seen?.reports).toBe(0);
			// and the request had already failed, with the code for an ended invocation
			expect(seen?.request).not.toBe("pending");
			expect((seen?.request as Outcome | undefined)?.error).toMatchObject({
				code: errorCodes.invocationEnded,
				end: "timeout",
			});
			// the partner server saw the socket closed while that onError still ran
			expect(seen?.socketClosed).toBe(true);
			if (withStats)
				expect(statsOf(context)).toEqual([expect.objectContaining({ leftovers: { dumped: 0, aborted: 1 } })]);
		},
	);
});

describe("8. concurrency: 30 invocations at once in one process, one pool of 4 connections", () => {
	it("attributes each invocation's requests to it, keeps each one's leftovers its own, and settles with no request open", async () => {
		const { middleware, reports } = setup({ connections: 4 });
		type Kind = "reads" | "throws" | "unread" | "waiting" | "timeout";
		// Two timeouts at most: each holds one of the 4 connections (its /hang) until Middy raises it.
		const kindOf = (i: number): Kind =>
			i === 4 || i === 19
				? "timeout"
				: ((["reads", "throws", "unread", "waiting"] as const)[i % 4] ?? "reads");
		const echoesOf = (i: number) => 1 + (i % 3);
		const extraOf = (i: number) => (["unread", "waiting", "timeout"].includes(kindOf(i)) ? 1 : 0);
		const bodies = new Map<number, Dispatcher.ResponseData["body"]>();
		const hangs = new Map<number, ReturnType<typeof track>>();

		const handler = middy<{ i: number }>({ timeoutEarlyInMillis: 250 })
			.use(middleware)
			.handler(async ({ i }, context) => {
				const headers = { "x-invocation": String(i) };
				for (let n = 0; n < echoesOf(i); n++) {
					const { body } = await context.http.request({ path: "/echo", method: "GET", headers });
					const echoed = (await body.json()) as { headers: Record<string, string> };
					if (echoed.headers["x-invocation"] !== String(i)) throw new Error(`${i} got another's answer`);
				}
				const kind = kindOf(i);
				if (kind === "throws") throw new Error(`failed ${i}`);
				if (kind === "unread") {
					const { body } = await context.http.request({
						path: "/large?bytes=100000",
						method: "GET",
						headers,
					});
					bodies.set(i, body);
				}
				if (kind === "waiting" || kind === "timeout") {
					const hang = context.http.request({ path: `/hang?i=${i}`, method: "GET", headers });
					hangs.set(i, track(hang));
					hang.catch(() => {});
					if (
						!(await eventually(() => server.receivedCount("GET", `/hang?i=${i}`) === 1, { timeoutMs: 5000 }))
					) {
						throw new Error(`${i}: /hang never reached the server`);
					}
					if (kind === "timeout") await hang;
				}
				return { i, requests: context.http.invocationStats.requests };
			});

		const indexes = Array.from({ length: 30 }, (_, i) => i);
		const results = await Promise.all(
			indexes.map((i) => outcome(handler({ i }, lambdaContext(kindOf(i) === "timeout" ? 1500 : 10_000)))),
		);

		for (const i of indexes) {
			const kind = kindOf(i);
			const r = results[i];
			if (kind === "throws") expect((r?.error as Error | undefined)?.message).toBe(`failed ${i}`);
			else if (kind === "timeout") expect(r?.error).toMatchObject({ name: "TimeoutError" });
			// counted live, during the invocation: its own requests only
			else expect(r).toEqual({ value: { i, requests: echoesOf(i) + extraOf(i) } });
		}
		// one report per invocation
		const byInvocation = new Map<number, HttpPoolStats[]>();
		for (const { event, stats } of reports) {
			const i = Number((event as { i?: number }).i ?? -1);
			byInvocation.set(i, [...(byInvocation.get(i) ?? []), stats]);
		}
		expect(reports).toHaveLength(30);
		for (const i of indexes) {
			const kind = kindOf(i);
			const stats = byInvocation.get(i);
			expect(stats, `invocation ${i}`).toHaveLength(1);
			const own = server.received.filter((req) => req.headers["x-invocation"] === String(i)).length;
			// its requests, as the server received them, and nobody else's
			expect({ i, requests: stats?.[0]?.requests }).toEqual({ i, requests: own });
			expect({ i, requests: own }).toEqual({ i, requests: echoesOf(i) + extraOf(i) });
			expect({
				i,
				connections: (stats?.[0]?.connectionsOpened ?? 0) + (stats?.[0]?.connectionsReused ?? 0),
			}).toEqual({
				i,
				connections: own,
			});
			// its leftovers, and nobody else's
			expect({ i, leftovers: stats?.[0]?.leftovers }).toEqual({
				i,
				leftovers:
					kind === "unread"
						? { dumped: 1, aborted: 0 }
						: kind === "waiting" || kind === "timeout"
							? { dumped: 0, aborted: 1 }
							: { dumped: 0, aborted: 0 },
			});
		}
		for (const [i, hang] of hangs) {
			expect({ i, code: codeOf((hang.now as Outcome).error) }).toEqual({
				i,
				code: errorCodes.invocationEnded,
			});
		}
		for (const body of bodies.values()) await expect(body.text()).rejects.toMatchObject(invocationEnded);

		// nothing is left running in the pool
		const pool = () => (middleware.dispatcher as Pool).stats;
		await vi.waitFor(() =>
			expect({ running: pool().running, pending: pool().pending }).toEqual({ running: 0, pending: 0 }),
		);
		expect(pool().connected).toBeLessThanOrEqual(4);
		// nor on the server: once it closes its idle sockets, none is left (a request still open keeps its socket)
		server.closeIdleConnections();
		await vi.waitFor(() => expect(server.stats.open).toBe(0));
	});
});
