// The connection is closed (scoped) or released (pool) on every path an invocation can take through Middy, and
// the close has finished when the invocation returns. Each case is checked against what the server counts, not
// against what the client believes.
import middy, { type MiddlewareObj } from "@middy/core";
import { startTcpProxy } from "@middy-conn/test-harness";
import { usePoolCleanup, useTestDatabase } from "@middy-conn/test-harness/test-fixtures";
import type { RowDataPacket } from "mysql2";
import { describe, expect, it } from "vitest";
import { closeMysqlPools, type MysqlConnectionStats, mysqlConnection } from "../src/index.ts";
import { configOf, inMode, invoke, outcome, recordingLogger } from "./helpers.ts";

const { admin, db } = useTestDatabase("mysql_closing", { settle: "wait" });
usePoolCleanup(closeMysqlPools);

const modes = ["scoped", "pool"] as const;

describe.each(modes)("mode %s: the connection is closed on every path", (mode) => {
	// Pool mode keeps one warm connection (connectionLimit 1); scoped mode keeps none.
	const warm = mode === "pool" ? 1 : 0;
	const setup = () => {
		const stats: MysqlConnectionStats[] = [];
		const { logger } = recordingLogger();
		const middleware = mysqlConnection({
			...inMode(db, mode),
			logger,
			onStats: (s) => {
				stats.push(s);
			},
		});
		return { stats, middleware };
	};

	type Middleware = ReturnType<typeof setup>["middleware"];
	/**
	 * Middy with `earlier` registered before ours and `later` after it, around a handler that runs SELECT 1, then
	 * returns or throws "handler failed".
	 */
	const around =
		({
			earlier,
			later,
			ending = "return",
		}: {
			earlier?: MiddlewareObj;
			later?: MiddlewareObj;
			ending?: "return" | "throw";
		}) =>
		(middleware: Middleware) =>
			middy()
				.use(earlier ? [earlier] : [])
				.use(middleware)
				.use(later ? [later] : [])
				.handler(async (_event, context) => {
					const [rows] = await context.db.query<RowDataPacket[]>("SELECT 1 AS one");
					if (ending === "throw") throw new Error("handler failed");
					return rows[0]?.one;
				});
	const throwing = (message: string) => () => {
		throw new Error(message);
	};

	// Every path: the invocation's outcome, one report, the close over (its kind as expected) when the invocation
	// returned, and the server left with the warm connection only (none once it was destroyed).
	it.each<{
		name: string;
		build: (middleware: Middleware) => unknown;
		expected: { value: unknown } | { error: string };
		closed: "graceful" | "destroyed";
	}>([
		{
			name: "closes the connection when the handler succeeds",
			build: around({}),
			expected: { value: 1 },
			closed: "graceful",
		},
		{
			name: "closes the connection when the handler throws",
			build: around({ ending: "throw" }),
			expected: { error: "handler failed" },
			closed: "graceful",
		},
		{
			// used first: its after runs last, so the throwing after (registered later) runs before it and Middy skips it
			name: "closes once when a later after throws and onError runs as well",
			build: around({ later: { after: throwing("after failed") } }),
			expected: { error: "after failed" },
			closed: "graceful",
		},
		{
			name: "closes in its own after, and does nothing more in onError, when an earlier-registered after throws",
			build: around({ earlier: { after: throwing("outer after failed") } }),
			expected: { error: "outer after failed" },
			closed: "graceful",
		},
		{
			name: "closes the connection when a later before returns early (Middy skips every after)",
			build: (middleware) =>
				middy()
					.use(middleware)
					.use({
						before: async (request) => {
							await (request.context as unknown as { db: { query(sql: string): Promise<unknown> } }).db.query(
								"SELECT 1",
							);
							return { statusCode: 304 };
						},
					})
					.handler(async () => ({ statusCode: 200 })),
			expected: { value: { statusCode: 304 } },
			closed: "graceful",
		},
		{
			name: "closes the connection when an onError registered later answers and skips ours",
			build: around({ later: { onError: () => ({ statusCode: 500 }) }, ending: "throw" }),
			expected: { value: { statusCode: 500 } },
			closed: "graceful",
		},
		{
			name: "destroys the connection when an onError registered later throws and Middy skips ours",
			build: around({ later: { onError: throwing("onError failed") }, ending: "throw" }),
			expected: { error: "onError failed" },
			closed: "destroyed",
		},
	])("$name", async ({ build, expected, closed }) => {
		const { stats, middleware } = setup();
		const result = await outcome(invoke(build(middleware))).then((r) => ({
			...r,
			// read the moment the invocation returned: the close had finished
			reports: stats.length,
			closedWhenReturned: stats.at(-1)?.closed,
		}));
		if ("value" in expected) {
			expect(result.error).toBeUndefined();
			expect(result.value).toEqual(expected.value);
		} else {
			expect((result.error as Error).message).toBe(expected.error);
		}
		expect(result.reports).toBe(1);
		expect(stats).toHaveLength(1);
		expect(stats[0]).toMatchObject({ connected: true });
		const left = closed === "graceful" ? warm : 0;
		expect(result.closedWhenReturned).toBe(
			closed === "destroyed" ? "destroyed" : mode === "pool" ? "released" : "ended",
		);
		expect(await admin.settleConnections(db.user, left)).toBe(left);
	});

	it("at Middy's early timeout, fails the running query at once, destroys the connection and stops the statement on the server", async () => {
		const { stats, middleware } = setup();
		let queryError: unknown;
		let running: Promise<unknown> | undefined;
		// timeoutEarlyInMillis leaves the invocation time to stop the statement on the server (a KILL)
		const handler = middy({ timeoutEarlyInMillis: 250 })
			.use(middleware)
			.handler(async (_event, context) => {
				await context.db.query("SELECT 1");
				running = context.db.query("SELECT SLEEP(5)").catch((error: unknown) => {
					queryError = error;
				});
				await running;
				return "too late";
			});
		// The function's remaining time ends well before SLEEP(5) does: Middy's early timeout fires mid-query.
		const result = await outcome(invoke(handler, {}, { timeoutMs: 600 }));
		expect((result.error as Error).name).toBe("TimeoutError");
		expect(stats.at(-1)?.closed).toBe("destroyed");
		// the handler's pending query fails instead of hanging
		await running;
		expect((queryError as { code?: string }).code).toBe("MIDDY_CONN_MYSQL_INTERRUPTED");
		// the statement was killed on the server: the session is gone well before SLEEP(5) would have returned
		expect(await admin.settleConnections(db.user, 0, 3000)).toBe(0);
	});

	it("survives a KILL in the middle of an invocation: cleanup does not throw and the next invocation works", async () => {
		const { stats, middleware } = setup();
		let reportId: (id: number) => void = () => {};
		const connectionId = new Promise<number>((resolve) => {
			reportId = resolve;
		});
		const handler = middy<{ sleep?: boolean }>()
			.use(middleware)
			.handler(async (event, context) => {
				const [rows] = await context.db.query<RowDataPacket[]>("SELECT CONNECTION_ID() AS id");
				reportId(Number(rows[0]?.id));
				if (event.sleep) await context.db.query("SELECT SLEEP(5)");
				return Number(rows[0]?.id);
			});
		const running = outcome(invoke(handler, { sleep: true }));
		const killed = await connectionId;
		await admin.kill(killed);
		const result = await running;
		const error = result.error as { code?: string; message: string; cause?: unknown };
		expect(error.code).toBe("PROTOCOL_CONNECTION_LOST");
		expect(error.message).toMatch(/was lost.*not retried/);
		expect(stats.at(-1)?.closed).toBe("destroyed");
		// the next invocation gets a new, working connection
		const next = await invoke<number>(handler, {});
		expect(next).not.toBe(killed);
		expect(await admin.settleConnections(db.user, warm)).toBe(warm);
	});

	it("bounds the close by closeTimeout when the server stops answering, then destroys the socket", async () => {
		const proxy = await startTcpProxy(db);
		try {
			const stats: MysqlConnectionStats[] = [];
			const handler = middy<{ freeze: boolean }>()
				.use(
					mysqlConnection({
						config: { ...configOf(db), host: proxy.host, port: proxy.port },
						mode,
						closeTimeout: 100,
						logger: false,
						onStats: (s) => void stats.push(s),
					}),
				)
				.handler(async (event, context) => {
					const [rows] = await context.db.query<RowDataPacket[]>("SELECT CONNECTION_ID() AS id");
					// the path to the server goes silent: the QUIT (scoped) or the reset (pool) gets no answer
					if (event.freeze) proxy.freeze();
					return Number(rows[0]?.id);
				});
			const frozen = await invoke<number>(handler, { freeze: true });
			expect(stats[0]?.closed).toBe("destroyed");
			// the next invocation gets a new connection, and closes it normally
			expect(await invoke<number>(handler, { freeze: false })).not.toBe(frozen);
			expect(stats[1]?.closed).toBe(mode === "pool" ? "released" : "ended");
		} finally {
			await proxy.close();
		}
	});

	it("closes a connection whose session id is still on its way when Middy's timeout ends the invocation", async () => {
		// The handshake completes; the SELECT CONNECTION_ID() that follows it (cancelOnTimeout) never gets an answer.
		const proxy = await startTcpProxy(db, { freezeOn: (chunk) => chunk.includes("CONNECTION_ID()") });
		try {
			const stats: MysqlConnectionStats[] = [];
			const handler = middy({ timeoutEarlyInMillis: 250 })
				.use(
					mysqlConnection({
						config: { ...configOf(db), host: proxy.host, port: proxy.port },
						mode,
						logger: false,
						onStats: (s) => void stats.push(s),
					}),
				)
				.handler(async (_event, context) => {
					statement = outcome(context.db.query("SELECT 1"));
					await statement;
					return "too late";
				});
			let statement: Promise<{ error?: unknown }> | undefined;
			const result = await outcome(invoke(handler, {}, { timeoutMs: 600 }));
			expect((result.error as Error).name).toBe("TimeoutError");
			expect(stats.at(-1)).toMatchObject({ connected: false, acquired: false });
			// the handler's statement, still waiting for the connection, fails as every connect cut short does in its mode
			const { error } = await (statement as NonNullable<typeof statement>);
			expect((error as { code?: string }).code).toBe(
				mode === "scoped" ? "MIDDY_CONN_MYSQL_DESTROYED" : "MIDDY_CONN_MYSQL_CLOSED",
			);
			// nothing holds the connection once the invocation is over: the server sees it go
			expect(await admin.settleConnections(db.user, 0, 3000)).toBe(0);
		} finally {
			await proxy.close();
		}
	});

	it("refuses statements once the invocation has ended, rather than opening a connection nothing would close", async () => {
		const { middleware } = setup();
		// observed from the start: it fails after the invocation, possibly before invoke() has returned
		let later: Promise<{ value?: unknown; error?: unknown }> | undefined;
		const handler = middy()
			.use(middleware)
			.handler(async (_event, context) => {
				await context.db.query("SELECT 1");
				later = outcome(
					new Promise((resolve) => setTimeout(resolve, 10)).then(() => context.db.query("SELECT 2")),
				);
				return "ok";
			});
		expect(await invoke(handler)).toBe("ok");
		const result = await (later as NonNullable<typeof later>);
		expect((result.error as { code?: string }).code).toBe("MIDDY_CONN_MYSQL_CLOSED");
		expect(await admin.settleConnections(db.user, warm)).toBe(warm);
	});
});

describe("lazy connection", () => {
	it("opens nothing when the invocation never touches context.db", async () => {
		const stats: MysqlConnectionStats[] = [];
		const handler = middy()
			.use(mysqlConnection({ config: configOf(db), onStats: (s) => void stats.push(s) }))
			.handler(async () => "untouched");
		const before = await admin.connectionsOpenedBy(db.user);
		for (let i = 0; i < 5; i++) expect(await invoke(handler)).toBe("untouched");
		expect(await admin.connectionsOpenedBy(db.user)).toBe(before);
		expect(stats).toHaveLength(5);
		expect(stats.every((s) => !s.connected && s.closed === "none" && s.queries === 0)).toBe(true);
	});

	it("opens one connection for statements issued at once before it is connected", async () => {
		const stats: MysqlConnectionStats[] = [];
		const handler = middy()
			.use(mysqlConnection({ config: configOf(db), onStats: (s) => void stats.push(s) }))
			.handler(async (_event, context) => {
				const results = await Promise.all(
					[1, 2, 3, 4].map((n) =>
						context.db.query<RowDataPacket[]>("SELECT CONNECTION_ID() AS id, ? AS n", [n]),
					),
				);
				return new Set(results.map(([rows]) => rows[0]?.id)).size;
			});
		const before = await admin.connectionsOpenedBy(db.user);
		expect(await invoke(handler)).toBe(1);
		expect(await admin.connectionsOpenedBy(db.user)).toBe(before + 1);
		expect(stats[0]).toMatchObject({ connected: true, queries: 4, closed: "ended" });
	});
});
