// The rules of the invocation lifecycle (packages/lifecycle/src/invocation.ts), as @middy-conn/mysql keeps them
// against the real server, in both modes. Every claim is checked against what the SERVER sees: its processlist,
// its row locks, the rows it committed, the connections it counts. The paths closing-paths.test.ts
// already covers (success, handler throws, an after throws, a later before answers, a later onError answers or
// throws, Middy's timeout mid-query) are not repeated here.
import { randomUUID } from "node:crypto";
import net from "node:net";
import { setTimeout as delay } from "node:timers/promises";
import middy from "@middy/core";
import { closeHttpPools, httpPool } from "@middy-conn/http-pool";
import { eventually, usePoolCleanup, useTestDatabase, within } from "@middy-conn/test-harness/test-fixtures";
import mysql, { type RowDataPacket } from "mysql2/promise";
import { describe, expect, it } from "vitest";
import {
	closeMysqlPools,
	type MysqlConnectionOptions,
	type MysqlConnectionStats,
	type MysqlContext,
	mysqlConnection,
} from "../src/index.ts";
import { configOf, inMode, invoke, outcome, recordingLogger } from "./helpers.ts";

// settle "kill": a test that failed may have left sessions behind: they must not fail the next one too
const { admin, db } = useTestDatabase("mysql_lifecycle", {
	tables: [
		"items (id INT AUTO_INCREMENT PRIMARY KEY, tag VARCHAR(100) NOT NULL, KEY (tag)) ENGINE=InnoDB",
		"bulk (id INT AUTO_INCREMENT PRIMARY KEY, tag VARCHAR(100) NOT NULL) ENGINE=InnoDB",
		"counters (id INT PRIMARY KEY, v INT NOT NULL) ENGINE=InnoDB",
	],
	seed: (admin, db) => {
		const ids = Array.from({ length: 100 }, (_, i) => `(${i + 1}, 0)`).join(", ");
		return admin.query(`INSERT INTO \`${db.database}\`.counters (id, v) VALUES ${ids}`);
	},
	settle: "kill",
});
usePoolCleanup(closeMysqlPools, closeHttpPools);

// --- What the server sees ---

/** The tags of the committed rows starting with `prefix` (read from the admin connection: committed data only). */
const committedTags = async (prefix: string): Promise<string[]> => {
	const rows = await admin.query<RowDataPacket[]>(
		`SELECT tag FROM \`${db.database}\`.items WHERE tag LIKE ? ORDER BY tag`,
		[`${prefix}%`],
	);
	return rows.map((row) => String(row.tag));
};

const counterValue = async (id: number): Promise<number> => {
	const rows = await admin.query<RowDataPacket[]>(`SELECT v FROM \`${db.database}\`.counters WHERE id = ?`, [
		id,
	]);
	return Number(rows[0]?.v);
};

const sessionOf = async (id: number) => (await admin.processlist(db.user)).find((p) => p.id === id);

// The polls' bounds leave room for a loaded CI machine (MariaDB sometimes takes up to 2 s to act on a KILL, see
// below) and stay short of the SLEEPs the tests give up on: a statement merely abandoned is still listed then.

/** How the server is polled: at most 1 s by default, every 20 ms. */
const serverPoll = { timeoutMs: 1000, everyMs: 20 };

/** Polls (bounded) until the server no longer lists the session. */
const sessionGone = (id: number, timeoutMs = 3000): Promise<boolean> =>
	eventually(async () => !(await sessionOf(id)), { ...serverPoll, timeoutMs });

/** Polls (bounded) until the session runs no statement (gone, or idle). */
const statementStopped = (id: number, timeoutMs = 3000): Promise<boolean> =>
	eventually(async () => ((await sessionOf(id))?.info ?? null) === null, { ...serverPoll, timeoutMs });

/**
 * Whether a row of `counters` is free of locks right now: the admin session tries to lock it without waiting
 * (NOWAIT fails at once when another transaction holds it). Unlike information_schema.INNODB_TRX, which InnoDB
 * caches for up to 100 ms, this is the server's state at this instant.
 */
const rowLockFree = async (row: number): Promise<boolean> => {
	const probe = await outcome(
		admin.query(`SELECT v FROM \`${db.database}\`.counters WHERE id = ? FOR UPDATE NOWAIT`, [row]),
	);
	if (probe.error && codeOf(probe.error) !== "ER_LOCK_WAIT_TIMEOUT") throw probe.error;
	return probe.error === undefined;
};

/** A plain connection of the test user, outside any middleware: "another client". */
const otherConnection = () =>
	mysql.createConnection({
		host: db.host,
		port: db.port,
		user: db.user,
		password: db.password,
		database: db.database,
	});

const codeOf = (error: unknown): unknown => (error as { code?: unknown } | undefined)?.code;

type Ctx = MysqlContext;
const ctxOf = (request: { context: unknown }): Ctx => request.context as Ctx;

const insertSql = `INSERT INTO items (tag) VALUES (?)`;

const modes = ["scoped", "pool"] as const;

describe.each(modes)("mode %s", (mode) => {
	// Pool mode keeps one warm connection (connectionLimit 1); scoped mode keeps none.
	const warm = mode === "pool" ? 1 : 0;
	const graceful = mode === "pool" ? "released" : "ended";
	// rows of `counters` used by this mode's tests, so that the two modes never share a lock
	const rowBase = mode === "pool" ? 50 : 0;
	const newTag = () => `${mode}-${randomUUID().slice(0, 8)}-`;

	/**
	 * The middleware, recording its stats. Without them (`withStats: false`) the lifecycle observes Middy's control
	 * flow only from the first use of the connection or of waitUntil: that path is checked too.
	 */
	const setup = (options: Partial<MysqlConnectionOptions> = {}, withStats = true) => {
		const stats: MysqlConnectionStats[] = [];
		const { logger, lines } = recordingLogger();
		const middleware = mysqlConnection({
			...inMode(db, mode),
			logger,
			...(withStats ? { onStats: (s: MysqlConnectionStats) => void stats.push(s) } : {}),
			...options,
		});
		return { stats, lines, logger, middleware };
	};

	/** One invocation that opens the pool's warm connection (pool mode), so that the warm count is 1 before a test. */
	const warmUp = async () => {
		if (mode !== "pool") return;
		const { middleware } = setup();
		const handler = middy()
			.use(middleware)
			.handler(async (_event, context) => {
				await context.db.query("SELECT 1");
			});
		await invoke(handler);
		expect(await admin.settleConnections(db.user, 1)).toBe(1);
	};

	/** A later invocation (with a middleware of the same config: the same warm pool) runs, and does not wait. */
	const nextInvocationRuns = async (): Promise<number | undefined> => {
		const { middleware } = setup();
		const handler = middy()
			.use(middleware)
			.handler(async (_event, context) => {
				const [rows] = await context.db.query<RowDataPacket[]>("SELECT CONNECTION_ID() AS id");
				return Number(rows[0]?.id);
			});
		const next = await within(invoke<number>(handler), 3000);
		expect(next.settled).toBe(true);
		expect(next.error).toBeUndefined();
		return next.value;
	};

	describe("1. one teardown per invocation, finished before the invocation's promise settles, on every path", () => {
		interface PathCase {
			path: string;
			build: (middleware: ReturnType<typeof setup>["middleware"], handler: Handler) => unknown;
			transaction: boolean;
			/** Lambda's remaining time for the invocation. */
			timeoutMs?: number;
			/** The handler, after its statements: what it waits on. */
			afterStatements: "return" | "throw" | "sleep-statement" | "sleep-timer";
			expected: { value: unknown } | { error: string | { name: string } | { code: string } };
			closed: "graceful" | "destroyed";
		}
		type Handler = (event: unknown, context: Ctx, opts: { signal: AbortSignal }) => Promise<unknown>;

		const cases: PathCase[] = [
			{
				path: "an after registered later returns early (Middy skips ours)",
				build: (mw, handler) =>
					middy()
						.use(mw)
						.use({ after: () => ({ statusCode: 304 }) })
						.handler(handler),
				transaction: true,
				afterStatements: "return",
				expected: { value: { statusCode: 304 } },
				closed: "graceful",
			},
			{
				path: "an onError registered later remaps the error, then ours runs",
				build: (mw, handler) =>
					middy()
						.use(mw)
						.use({
							onError: (request) => {
								request.error = new Error("remapped");
							},
						})
						.handler(handler),
				transaction: true,
				afterStatements: "throw",
				expected: { error: "remapped" },
				closed: "graceful",
			},
			{
				path: "an onError registered earlier remaps the error after ours ran",
				build: (mw, handler) =>
					middy()
						.use({
							onError: (request) => {
								request.error = new Error("remapped");
							},
						})
						.use(mw)
						.handler(handler),
				transaction: true,
				afterStatements: "throw",
				expected: { error: "remapped" },
				closed: "graceful",
			},
			{
				path: "an onError registered earlier answers after ours ran",
				build: (mw, handler) =>
					middy()
						.use({ onError: () => ({ statusCode: 500 }) })
						.use(mw)
						.handler(handler),
				transaction: true,
				afterStatements: "throw",
				expected: { value: { statusCode: 500 } },
				closed: "graceful",
			},
			{
				path: "an onError registered earlier throws after ours ran",
				build: (mw, handler) =>
					middy()
						.use({
							onError: () => {
								throw new Error("onError failed");
							},
						})
						.use(mw)
						.handler(handler),
				transaction: true,
				afterStatements: "throw",
				expected: { error: "onError failed" },
				closed: "graceful",
			},
			{
				path: "Middy's TimeoutError while the handler waits on something else than the database",
				build: (mw, handler) => middy({ timeoutEarlyInMillis: 250 }).use(mw).handler(handler),
				transaction: true,
				timeoutMs: 700,
				afterStatements: "sleep-timer",
				expected: { error: { name: "TimeoutError" } },
				closed: "destroyed",
			},
			{
				path: "a timeoutEarlyResponse that returns a value while a statement runs",
				build: (mw, handler) =>
					middy({ timeoutEarlyInMillis: 250, timeoutEarlyResponse: () => ({ statusCode: 503 }) })
						.use(mw)
						.handler(handler),
				transaction: false,
				timeoutMs: 700,
				afterStatements: "sleep-statement",
				expected: { value: { statusCode: 503 } },
				closed: "destroyed",
			},
		];

		it.each(cases.map((c, i) => ({ ...c, row: rowBase + 1 + i })))("$path", async (c) => {
			const { stats, middleware } = setup({ transaction: c.transaction });
			let session: number | undefined;
			let statementsDone = false;
			const handler: Handler = async (_event, context, { signal }) => {
				const [rows] = await context.db.query<RowDataPacket[]>("SELECT CONNECTION_ID() AS id");
				session = Number(rows[0]?.id);
				// inside the managed transaction: a row lock the server holds until the transaction ends, and enough
				// written that rolling it back takes the server a moment (a teardown not awaited would show)
				await context.db.query("SELECT v FROM counters WHERE id = ? FOR UPDATE", [c.row]);
				if (c.transaction) {
					await context.db.query("INSERT INTO bulk (tag) SELECT CONCAT('r', seq) FROM seq_1_to_20000");
				}
				statementsDone = true;
				if (c.afterStatements === "throw") throw new Error("handler failed");
				if (c.afterStatements === "sleep-timer") await delay(5000, undefined, { signal });
				if (c.afterStatements === "sleep-statement") await context.db.query("SELECT SLEEP(5)");
				return { statusCode: 200 };
			};
			const built = c.build(middleware, handler);
			const result = await outcome(invoke(built, {}, { timeoutMs: c.timeoutMs ?? 10_000 })).then((r) => ({
				...r,
				// what the middleware had reported when the invocation's promise settled
				reports: stats.length,
				closed: stats.at(-1)?.closed,
			}));

			if ("value" in c.expected) {
				expect(result.error).toBeUndefined();
				expect(result.value).toEqual(c.expected.value);
			} else if (typeof c.expected.error === "string") {
				expect((result.error as Error | undefined)?.message).toBe(c.expected.error);
			} else {
				expect(result.error).toMatchObject(c.expected.error);
			}
			// the path was taken after the handler's statements, not because of them
			expect(statementsDone).toBe(true);
			const id = session as number;
			// one teardown, over before the promise settled
			expect(result.reports).toBe(1);
			expect(result.closed).toBe(c.closed === "graceful" ? graceful : "destroyed");

			if (c.closed === "graceful" && mode === "pool") {
				// released: the reset was on the wire before the invocation settled (its answer is awaited by the next
				// acquire), so the transaction is rolled back within a round trip: the row lock is free, and the session
				// stays, idle
				expect(await eventually(() => rowLockFree(c.row), serverPoll)).toBe(true);
				expect(await sessionOf(id)).toBeDefined();
				// (the server may list it as "Reset connection" for a moment after it answered the reset)
				expect(await eventually(async () => (await sessionOf(id))?.command === "Sleep", serverPoll)).toBe(
					true,
				);
				// released once, and kept: the next invocation gets the very same session
				expect(await nextInvocationRuns()).toBe(id);
			} else {
				// ended or destroyed (and its statement killed): the session leaves the server, and its lock with it
				expect(await sessionGone(id)).toBe(true);
				expect(await rowLockFree(c.row)).toBe(true);
				expect(await nextInvocationRuns()).not.toBe(id);
			}
			expect(await admin.settleConnections(db.user, warm)).toBe(warm);
			// and never a second one, later
			expect(stats).toHaveLength(1);
		});
	});

	describe("2. background tasks first: a task handed to context.waitUntil lands before any connection closes", () => {
		const orders = ["httpPool() then mysqlConnection()", "mysqlConnection() then httpPool()"] as const;
		const paths = [
			"ordinary path",
			"an after registered later returns early",
			"a before registered later hands the task over and returns early",
		] as const;
		const matrix = orders.flatMap((order) =>
			paths.flatMap((path) => [
				{ order, path, withStats: true, observed: "onStats" },
				{ order, path, withStats: false, observed: "no onStats" },
			]),
		);

		it.each(matrix)("$order, $path ($observed)", async ({ order, path, withStats }) => {
			const { stats, middleware, lines } = setup({}, withStats);
			const tag = newTag();
			const http = httpPool({ logger: false });
			// the task uses the database a while after it was handed over: nothing may close before it is done
			const task = (context: Ctx) => async () => {
				await delay(100);
				await context.db.query(insertSql, [`${tag}task`]);
			};
			const base =
				order === "httpPool() then mysqlConnection()"
					? middy().use(http).use(middleware)
					: middy().use(middleware).use(http);
			const withPath =
				path === "an after registered later returns early"
					? base.use({ after: () => ({ statusCode: 304 }) })
					: path === "a before registered later hands the task over and returns early"
						? base.use({
								before: (request) => {
									ctxOf(request).waitUntil(task(ctxOf(request)));
									return { statusCode: 202 };
								},
							})
						: base;
			let handlerRan = false;
			const handler = withPath.handler(async (_event, context) => {
				handlerRan = true;
				(context as unknown as Ctx).waitUntil(task(context as unknown as Ctx));
				return { statusCode: 200 };
			});

			const result = await outcome(invoke(handler)).then(async (r) => ({
				...r,
				// read the moment the invocation's promise settled: the row is already committed
				tagsWhenSettled: await committedTags(tag),
				closedWhenSettled: stats.at(-1)?.closed,
			}));

			expect(result.error).toBeUndefined();
			expect(result.value).toEqual({
				statusCode:
					path === "ordinary path" ? 200 : path === "an after registered later returns early" ? 304 : 202,
			});
			expect(handlerRan).toBe(path !== "a before registered later hands the task over and returns early");
			expect(result.tagsWhenSettled).toEqual([`${tag}task`]);
			if (withStats) {
				expect(result.closedWhenSettled).toBe(graceful);
				expect(stats).toHaveLength(1);
			}
			expect(lines.filter((line) => line.level !== "info")).toEqual([]);
			expect(await admin.settleConnections(db.user, warm)).toBe(warm);
		});
	});

	describe("3. nothing opened after teardown began is left open", () => {
		it.each([
			{ withStats: true, observed: "onStats" },
			{ withStats: false, observed: "no onStats" },
		])(
			"a background task that first uses context.db during the teardown of an early response: its connection is closed before the invocation returns ($observed)",
			async ({ withStats }) => {
				await warmUp();
				const { stats, middleware } = setup({}, withStats);
				const tag = newTag();
				let taskStarted = false;
				const handler = middy()
					.use(middleware)
					.use({ after: () => ({ statusCode: 304 }) })
					.handler(async (_event, context) => {
						context.waitUntil(async () => {
							// by now the early response has begun the teardown
							await delay(100);
							taskStarted = true;
							await context.db.query(insertSql, [`${tag}late`]);
						});
						return { statusCode: 200 };
					});
				const result = await outcome(invoke(handler)).then((r) => ({ ...r, closed: stats.at(-1)?.closed }));
				expect(result.value).toEqual({ statusCode: 304 });
				expect(taskStarted).toBe(true);
				expect(await committedTags(tag)).toEqual([`${tag}late`]);
				if (withStats) expect(result.closed).toBe(graceful);
				expect(await admin.settleConnections(db.user, warm)).toBe(warm);
				await nextInvocationRuns();
				expect(await admin.settleConnections(db.user, warm)).toBe(warm);
			},
		);

		it.each(
			[
				{ usedBefore: false, label: "the handler never used it" },
				{ usedBefore: true, label: "the handler had used it" },
			].flatMap((c) => [
				{ ...c, withStats: true, observed: "onStats" },
				{ ...c, withStats: false, observed: "no onStats" },
			]),
		)(
			"after an onError threw, the invocation is torn down at once: a task that then uses context.db fails with MIDDY_CONN_MYSQL_CLOSED and opens nothing ($label, $observed)",
			async ({ usedBefore, withStats }) => {
				await warmUp();
				const { middleware, lines } = setup({}, withStats);
				const tag = newTag();
				let taskError: unknown;
				let taskDone: Promise<void> | undefined;
				const handler = middy()
					.use(middleware)
					.use({
						onError: () => {
							throw new Error("onError failed");
						},
					})
					.handler(async (_event, context) => {
						if (usedBefore) await context.db.query("SELECT 1");
						context.waitUntil(() => {
							taskDone = (async () => {
								await delay(100);
								try {
									await context.db.query(insertSql, [`${tag}late`]);
								} catch (error) {
									taskError = error;
									throw error;
								}
							})();
							return taskDone;
						});
						throw new Error("handler failed");
					});
				const opened = await admin.connectionsOpenedBy(db.user);
				const result = await outcome(invoke(handler));
				expect((result.error as Error).message).toBe("onError failed");
				// the task was aborted, and said so
				expect(
					lines.some((line) => line.level === "warn" && /background task\(s\) aborted/.test(line.message)),
				).toBe(true);
				// its late statement fails visibly, at once, and opens nothing
				const late = await within(taskDone ?? Promise.reject(new Error("no task")), 2000);
				expect(late.settled).toBe(true);
				expect(codeOf(taskError)).toBe("MIDDY_CONN_MYSQL_CLOSED");
				expect(await admin.connectionsOpenedBy(db.user)).toBe(
					opened + (usedBefore && mode === "scoped" ? 1 : 0),
				);
				expect(await committedTags(tag)).toEqual([]);
				// a connection the handler had used was destroyed; an untouched warm one stays
				expect(await admin.settleConnections(db.user, usedBefore ? 0 : warm)).toBe(usedBefore ? 0 : warm);
				await nextInvocationRuns();
				expect(await admin.settleConnections(db.user, warm)).toBe(warm);
			},
		);

		interface EndedCase {
			path: string;
			build: (
				mw: ReturnType<typeof setup>["middleware"],
				handler: (e: unknown, c: Ctx) => Promise<unknown>,
			) => unknown;
			timeoutMs?: number;
			afterStatements: "return" | "throw" | "sleep-statement";
			/** How the invocation's connection was closed: a destroyed one leaves the pool. */
			closed: "graceful" | "destroyed";
		}
		const ended: EndedCase[] = [
			{
				path: "an after registered later returned early",
				build: (mw, handler) =>
					middy()
						.use(mw)
						.use({ after: () => ({ statusCode: 304 }) })
						.handler(handler),
				afterStatements: "return",
				closed: "graceful",
			},
			{
				path: "an onError registered later threw",
				build: (mw, handler) =>
					middy()
						.use(mw)
						.use({
							onError: () => {
								throw new Error("onError failed");
							},
						})
						.handler(handler),
				afterStatements: "throw",
				closed: "destroyed",
			},
			{
				path: "Middy's TimeoutError",
				build: (mw, handler) => middy({ timeoutEarlyInMillis: 250 }).use(mw).handler(handler),
				timeoutMs: 700,
				afterStatements: "sleep-statement",
				closed: "destroyed",
			},
			{
				path: "a timeoutEarlyResponse returned a value",
				build: (mw, handler) =>
					middy({ timeoutEarlyInMillis: 250, timeoutEarlyResponse: () => ({ statusCode: 503 }) })
						.use(mw)
						.handler(handler),
				timeoutMs: 700,
				afterStatements: "sleep-statement",
				closed: "destroyed",
			},
		];

		it.each(
			ended.flatMap((c) => [
				{ ...c, withStats: true, observed: "onStats" },
				{ ...c, withStats: false, observed: "no onStats" },
			]),
		)(
			"context.db used after the invocation ended ($path) rejects at once with MIDDY_CONN_MYSQL_CLOSED, opens nothing, and waitUntil refuses new tasks ($observed)",
			async (c) => {
				await warmUp();
				const { middleware } = setup({}, c.withStats);
				const tag = newTag();
				let leaked: Ctx | undefined;
				const handler = c.build(middleware, async (_event, context) => {
					leaked = context;
					await context.db.query("SELECT 1");
					if (c.afterStatements === "throw") throw new Error("handler failed");
					if (c.afterStatements === "sleep-statement")
						await context.db.query("SELECT SLEEP(5)").catch(() => {});
					return { statusCode: 200 };
				});
				await outcome(invoke(handler, {}, { timeoutMs: c.timeoutMs ?? 10_000 }));
				expect(leaked).toBeDefined();
				const context = leaked as Ctx;
				const left = c.closed === "graceful" ? warm : 0;
				expect(await admin.settleConnections(db.user, left)).toBe(left);
				const opened = await admin.connectionsOpenedBy(db.user);

				const late = await within(context.db.query(insertSql, [`${tag}late`]), 1000);
				expect(late.settled).toBe(true);
				expect(codeOf(late.error)).toBe("MIDDY_CONN_MYSQL_CLOSED");
				let refused: unknown;
				try {
					context.waitUntil(async () => {});
				} catch (error) {
					refused = error;
				}
				expect(codeOf(refused)).toBe("MIDDY_CONN_INVOCATION_ENDED");

				expect(await admin.connectionsOpenedBy(db.user)).toBe(opened);
				expect(await committedTags(tag)).toEqual([]);
				expect(await admin.settleConnections(db.user, left)).toBe(left);
				await nextInvocationRuns();
				expect(await admin.settleConnections(db.user, warm)).toBe(warm);
			},
		);
	});

	describe("4. unfinished work is never committed", () => {
		it(`a timeoutEarlyResponse answers while the handler's first INSERT still waits for its connection (${mode === "pool" ? "the pool's one connection is held by another invocation" : "the server does not answer the connect"}): the invocation fails with MIDDY_CONN_MYSQL_UNFINISHED, as it would with the connection held, and nothing is written`, async () => {
			const tag = newTag();
			// What holds the connect up: scoped, a listener that accepts and never sends MySQL's greeting; pool, another
			// invocation holding the pool's only connection.
			const silent = net.createServer(() => {});
			await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve));
			const silentPort = (silent.address() as net.AddressInfo).port;
			const { stats, middleware } =
				mode === "scoped"
					? setup({ transaction: true, config: { ...configOf(db), port: silentPort, connectTimeout: 5000 } })
					: setup({ transaction: true });
			let release: () => void = () => {};
			const holding =
				mode === "pool"
					? invoke(
							middy()
								.use(setup().middleware)
								.handler(async (_event, context) => {
									await context.db.query("SELECT 1");
									await new Promise<void>((resolve) => {
										release = resolve;
									});
								}),
						)
					: Promise.resolve();
			try {
				if (mode === "pool") expect(await admin.settleConnections(db.user, 1)).toBe(1);
				let inserted = false;
				const handler = middy({
					timeoutEarlyInMillis: 300,
					timeoutEarlyResponse: () => ({ statusCode: 503 }),
				})
					.use(middleware)
					.handler(async (_event, context) => {
						await context.db.query(insertSql, [`${tag}1`]);
						inserted = true;
						return { statusCode: 200 };
					});
				const result = await outcome(invoke(handler, {}, { timeoutMs: 600 }));
				expect(codeOf(result.error)).toBe("MIDDY_CONN_MYSQL_UNFINISHED");
				expect(result.value).toBeUndefined();
				expect(inserted).toBe(false);
				expect(stats.at(-1)?.transaction).toBe("none");
			} finally {
				release();
				await holding;
				await new Promise((resolve) => silent.close(resolve));
			}
			expect(await committedTags(tag)).toEqual([]);
			expect(await admin.settleConnections(db.user, warm)).toBe(warm);
		});

		it("a timeoutEarlyResponse answers while the handler is in SLEEP between two INSERTs: neither row is committed, the invocation fails with MIDDY_CONN_MYSQL_UNFINISHED, the session is killed", async () => {
			const { stats, middleware } = setup({ transaction: true });
			const tag = newTag();
			const steps: string[] = [];
			let session: number | undefined;
			let handlerDone: Promise<unknown> | undefined;
			const handler = middy({ timeoutEarlyInMillis: 300, timeoutEarlyResponse: () => ({ statusCode: 503 }) })
				.use(middleware)
				.handler((_event, context) => {
					handlerDone = (async () => {
						const [rows] = await context.db.query<RowDataPacket[]>("SELECT CONNECTION_ID() AS id");
						session = Number(rows[0]?.id);
						await context.db.query(insertSql, [`${tag}1`]);
						steps.push("insert-1");
						await context.db.query("SELECT SLEEP(10)");
						steps.push("sleep");
						await context.db.query(insertSql, [`${tag}2`]);
						steps.push("insert-2");
						return { statusCode: 200 };
					})();
					return handlerDone;
				});
			const result = await outcome(invoke(handler, {}, { timeoutMs: 600 })).then((r) => ({
				...r,
				closed: stats.at(-1)?.closed,
			}));
			// the timeout answered while INSERT #1 was done and SLEEP ran
			expect(steps).toEqual(["insert-1"]);
			expect(codeOf(result.error)).toBe("MIDDY_CONN_MYSQL_UNFINISHED");
			expect(result.closed).toBe("destroyed");
			// the session was killed: it leaves the server long before SLEEP(10) would have returned
			expect(await sessionGone(session as number)).toBe(true);
			// the handler, still running, cannot reach INSERT #2
			await within(handlerDone as Promise<unknown>, 3000);
			expect(steps).toEqual(["insert-1"]);
			expect(await committedTags(tag)).toEqual([]);
			expect(await admin.settleConnections(db.user, 0)).toBe(0);
		});

		// A known gap, documented in the README ("Closing, on every path"): a middleware cannot see whether the handler's
		// promise has settled, and Middy's abort signal reaches only the handler. Unfinished work is recognised by what
		// is in flight (a statement, a context.http request); a handler awaiting anything else looks finished, and
		// what it wrote so far is committed. Expected to fail until Middy offers a way to see it.
		it.fails("a timeoutEarlyResponse answers while the handler waits on something else than the database, between two INSERTs: nothing is committed", async () => {
			const { middleware } = setup({ transaction: true });
			const tag = newTag();
			const steps: string[] = [];
			let handlerDone: Promise<unknown> | undefined;
			const handler = middy({ timeoutEarlyInMillis: 300, timeoutEarlyResponse: () => ({ statusCode: 503 }) })
				.use(middleware)
				.handler((_event, context) => {
					handlerDone = (async () => {
						await context.db.query(insertSql, [`${tag}1`]);
						steps.push("insert-1");
						// e.g. an HTTP call without context.http; the handler does not listen to Middy's signal
						await delay(1500);
						steps.push("waited");
						await context.db.query(insertSql, [`${tag}2`]);
						steps.push("insert-2");
						return { statusCode: 200 };
					})();
					return handlerDone;
				});
			await outcome(invoke(handler, {}, { timeoutMs: 600 }));
			// the timeout answered between the two INSERTs
			expect(steps).toEqual(["insert-1"]);
			await within(handlerDone as Promise<unknown>, 3000);
			expect(steps).toEqual(["insert-1", "waited"]);
			// the handler never finished: half of its work must not be kept
			expect(await committedTags(tag)).toEqual([]);
		});
	});

	describe("5. a timeout is acted on the moment Middy raises it", () => {
		it("an onError that runs before ours gets an error at once from context.db instead of waiting behind the running SLEEP", async () => {
			const { stats, middleware } = setup();
			let session: number | undefined;
			let sleep: { value?: unknown; error?: unknown } | undefined;
			let handlerDone: Promise<unknown> | undefined;
			let inOnError: { reportsBefore: number; value?: unknown; error?: unknown } | undefined;
			// Middy runs the onErrors in reverse order of registration: this one runs before ours
			const handler = middy({ timeoutEarlyInMillis: 250 })
				.use(middleware)
				.use({
					onError: async (request) => {
						const reportsBefore = stats.length;
						const result = await outcome(ctxOf(request).db.query("SELECT 1"));
						inOnError = { reportsBefore, ...result };
					},
				})
				.handler((_event, context) => {
					const { db } = context as unknown as Ctx;
					handlerDone = (async () => {
						const [rows] = await db.query<RowDataPacket[]>("SELECT CONNECTION_ID() AS id");
						session = Number(rows[0]?.id);
						sleep = await outcome(db.query("SELECT SLEEP(5)"));
						return "too late";
					})();
					return handlerDone;
				});
			const result = await outcome(invoke(handler, {}, { timeoutMs: 700 }));
			await within(handlerDone as Promise<unknown>, 1000);
			expect(result.error).toMatchObject({ name: "TimeoutError" });
			// it ran before ours had closed anything
			expect(inOnError?.reportsBefore).toBe(0);
			// and its statement did not queue behind SLEEP(5): it failed instead of answering
			expect(inOnError?.value).toBeUndefined();
			expect(["MIDDY_CONN_MYSQL_INTERRUPTED", "MIDDY_CONN_MYSQL_CLOSED"]).toContain(codeOf(inOnError?.error));
			// the SLEEP itself was stopped, not waited for
			expect(codeOf(sleep?.error)).toBe("MIDDY_CONN_MYSQL_INTERRUPTED");
			// and the server no longer runs it
			expect(await statementStopped(session as number)).toBe(true);
			expect(await sessionGone(session as number)).toBe(true);
			expect(await admin.settleConnections(db.user, 0)).toBe(0);
		});
	});

	describe("6. the server stops too", () => {
		it.each([
			{ cancelOnTimeout: true, row: rowBase + 20 },
			{ cancelOnTimeout: false, row: rowBase + 21 },
		])(
			"after an early timeout in an UPDATE's transaction then SLEEP(5) (cancelOnTimeout: $cancelOnTimeout)",
			async ({ cancelOnTimeout, row }) => {
				const { stats, middleware } = setup({ transaction: true, cancelOnTimeout });
				const initial = await counterValue(row);
				let session: number | undefined;
				const handler = middy({ timeoutEarlyInMillis: 250 })
					.use(middleware)
					.handler(async (_event, context) => {
						const [rows] = await context.db.query<RowDataPacket[]>("SELECT CONNECTION_ID() AS id");
						session = Number(rows[0]?.id);
						await context.db.query("UPDATE counters SET v = v + 1 WHERE id = ?", [row]);
						await context.db.query("SELECT SLEEP(5)");
					});
				const result = await outcome(invoke(handler, {}, { timeoutMs: 700 }));
				expect(result.error).toMatchObject({ name: "TimeoutError" });
				expect(stats.at(-1)?.closed).toBe("destroyed");
				const id = session as number;
				try {
					if (!cancelOnTimeout) {
						// documents the option: the socket is gone, the statement (and its row lock) is not
						expect((await sessionOf(id))?.info).toBe("SELECT SLEEP(5)");
						expect(await rowLockFree(row)).toBe(false);
						return;
					}
					// the session runs no statement any more, well before SLEEP(5) would have ended
					expect(await statementStopped(id)).toBe(true);
					// and its row lock is gone: another connection updates the row without waiting for it
					const other = await otherConnection();
					try {
						await other.query("SET SESSION innodb_lock_wait_timeout = 1");
						const update = await outcome(other.query("UPDATE counters SET v = v + 1 WHERE id = ?", [row]));
						expect(codeOf(update.error)).toBeUndefined();
					} finally {
						await other.end();
					}
					// the timed-out UPDATE was rolled back
					expect(await counterValue(row)).toBe(initial + 1);
				} finally {
					await admin.kill(id).catch(() => {});
				}
				expect(await admin.settleConnections(db.user, 0)).toBe(0);
			},
		);
	});

	describe("8. concurrency: 20 invocations at once in one process", () => {
		it("commits exactly the rows of the successful ones, and the connections settle to the warm count", async () => {
			const connectionLimit = 5;
			const { middleware, stats } = setup({
				transaction: true,
				...(mode === "pool" ? { config: { ...configOf(db), connectionLimit } } : { config: configOf(db) }),
			});
			const tag = newTag();
			type Kind = "ok" | "throw" | "timeout";
			const kindOf = (i: number): Kind =>
				[3, 8, 13].includes(i) ? "throw" : [5, 11, 17].includes(i) ? "timeout" : "ok";
			const handler = middy<{ i: number }>({ timeoutEarlyInMillis: 250 })
				.use(middleware)
				.handler(async (event, context) => {
					await context.db.query(insertSql, [`${tag}${String(event.i).padStart(2, "0")}`]);
					const kind = kindOf(event.i);
					if (kind === "throw") throw new Error(`failed ${event.i}`);
					if (kind === "timeout") await context.db.query("SELECT SLEEP(10)");
					return event.i;
				});
			const indexes = Array.from({ length: 20 }, (_, i) => i);
			const results = await Promise.all(
				indexes.map((i) =>
					outcome(invoke<number>(handler, { i }, { timeoutMs: kindOf(i) === "timeout" ? 900 : 10_000 })),
				),
			);
			for (const i of indexes) {
				const kind = kindOf(i);
				const r = results[i];
				if (kind === "ok") expect(r).toEqual({ value: i });
				if (kind === "throw") expect((r?.error as Error | undefined)?.message).toBe(`failed ${i}`);
				if (kind === "timeout") expect(r?.error).toMatchObject({ name: "TimeoutError" });
			}
			expect(stats).toHaveLength(20);
			const ok = indexes.filter((i) => kindOf(i) === "ok").map((i) => `${tag}${String(i).padStart(2, "0")}`);
			expect(await committedTags(tag)).toEqual(ok);

			// The timed-out sessions are KILLed; MariaDB sometimes takes up to 2 s to answer KILLs of several sessions
			// in SLEEP() at once (seen with plain mysql2 too), hence the 4 s bound: well before SLEEP(10) would end.
			if (mode === "scoped") {
				expect(await admin.settleConnections(db.user, 0, 4000)).toBe(0);
				return;
			}
			// pool: no more than its limit, every session idle (the killed ones gone)
			const busySessions = async () =>
				(await admin.processlist(db.user)).filter((p) => p.info !== null || p.command !== "Sleep");
			await eventually(async () => (await busySessions()).length === 0, { ...serverPoll, timeoutMs: 4000 });
			expect(await busySessions()).toEqual([]);
			expect(await admin.connectionsOf(db.user)).toBeLessThanOrEqual(connectionLimit);
			// and every slot of the pool is free again: 5 invocations can hold a connection at the same time
			let arrived = 0;
			let release: () => void = () => {};
			const allHere = new Promise<void>((resolve) => {
				release = resolve;
			});
			const barrier = middy({ timeoutEarlyInMillis: 250 })
				.use(middleware)
				.handler(async (_event, context) => {
					const [rows] = await context.db.query<RowDataPacket[]>("SELECT CONNECTION_ID() AS id");
					arrived += 1;
					if (arrived === connectionLimit) release();
					await allHere;
					return Number(rows[0]?.id);
				});
			const held = await within(
				Promise.all(
					Array.from({ length: connectionLimit }, () => invoke<number>(barrier, {}, { timeoutMs: 4000 })),
				),
				5000,
			);
			expect(held.settled).toBe(true);
			expect(held.error).toBeUndefined();
			expect(new Set(held.value).size).toBe(connectionLimit);
			expect(await admin.settleConnections(db.user, connectionLimit)).toBe(connectionLimit);
		});
	});
});
