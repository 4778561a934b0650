// Mode "pool": a warm pool per execution environment, one connection acquired per invocation, reset before it
// goes back, never more connections than `connectionLimit`; and concurrency in both modes.
import middy from "@middy/core";
import { startTcpProxy } from "@middy-conn/test-harness";
import { usePoolCleanup, useTestDatabase } from "@middy-conn/test-harness/test-fixtures";
import type { RowDataPacket } from "mysql2";
import { describe, expect, it } from "vitest";
import {
	closeMysqlPools,
	type MysqlConfig,
	type MysqlConnectionStats,
	mysqlConnection,
} from "../src/index.ts";
import { configOf, invoke, outcome, recordingLogger } from "./helpers.ts";

const { admin, db } = useTestDatabase("mysql_pool", { settle: "wait" });
usePoolCleanup(closeMysqlPools);

const connectionIdQuery = "SELECT CONNECTION_ID() AS id";

/** A pool-mode function that answers the id of its server session, recording its stats. */
const connectionIdFunction = (stats: MysqlConnectionStats[]) =>
	middy()
		.use(mysqlConnection({ config: configOf(db), mode: "pool", onStats: (s) => void stats.push(s) }))
		.handler(async (_event, context) =>
			Number((await context.db.query<RowDataPacket[]>(connectionIdQuery))[0][0]?.id),
		);

/**
 * Drops the proxy's flows once they have been idle for 50 ms (no byte either way): by then a connection released with
 * a reset has had its answer. Bounded: gives up after 2 s. Returns how many flows were dropped.
 */
const droppedOnceIdle = async (nat: { dropIdle(idleForMs?: number): number }): Promise<number> => {
	for (let i = 0; i < 100; i += 1) {
		const dropped = nat.dropIdle(50);
		if (dropped > 0) return dropped;
		await new Promise((resolve) => setTimeout(resolve, 20));
	}
	return 0;
};

/**
 * A function that, asked for `dirty`, leaves a user variable in its session and then stops the network path (the
 * reset its connection is released with is never answered); otherwise it reads its session id and that variable.
 */
const freezingFunction = (
	path: { freeze(): void },
	middleware: ReturnType<typeof mysqlConnection<"db">>,
	options: { timeoutEarlyInMillis?: number } = {},
) =>
	middy<{ dirty: boolean }>(options)
		.use(middleware)
		.handler(async (event, context) => {
			if (event.dirty) await context.db.query("SET @leak = 1");
			const [rows] = await context.db.query<RowDataPacket[]>("SELECT CONNECTION_ID() AS id, @leak AS leak");
			if (event.dirty) path.freeze();
			return rows[0];
		});

describe("mode pool", () => {
	it("never holds more than connectionLimit server connections under 20 concurrent invocations", async () => {
		const stats: MysqlConnectionStats[] = [];
		const handler = middy()
			.use(
				mysqlConnection({
					config: { ...configOf(db), connectionLimit: 3 },
					mode: "pool",
					onStats: (s) => void stats.push(s),
				}),
			)
			.handler(async (_event, context) => {
				const [rows] = await context.db.query<RowDataPacket[]>(
					"SELECT CONNECTION_ID() AS id, SLEEP(0.05) AS s",
				);
				return Number(rows[0]?.id);
			});
		let running = true;
		const samples: number[] = [];
		const sampling = (async () => {
			while (running) samples.push(await admin.connectionsOf(db.user));
		})();
		const ids = await Promise.all(Array.from({ length: 20 }, () => invoke<number>(handler)));
		running = false;
		await sampling;
		expect(samples.length).toBeGreaterThan(0);
		expect(Math.max(...samples)).toBeLessThanOrEqual(3);
		expect(new Set(ids).size).toBeLessThanOrEqual(3);
		expect(stats).toHaveLength(20);
		expect(stats.filter((s) => s.connected)).toHaveLength(new Set(ids).size);
		expect(stats.every((s) => s.acquired && s.closed === "released")).toBe(true);
	});

	it("reuses the warm connection: connected on the first invocation, not on the next", async () => {
		const stats: MysqlConnectionStats[] = [];
		const handler = connectionIdFunction(stats);
		const first = await invoke<number>(handler);
		const second = await invoke<number>(handler);
		expect(second).toBe(first);
		expect(stats.map((s) => s.connected)).toEqual([true, false]);
		expect(await admin.connectionsOf(db.user)).toBe(1);
	});

	it.each([
		{ protocol: "plain", compress: false },
		{ protocol: "compressed (reset awaited before release)", compress: true },
	])(
		"resets the session: no user variable, temp table, named lock, session setting or transaction crosses invocations ($protocol protocol)",
		async ({ compress }) => {
			const handler = middy<{ step: "dirty" | "look" }>()
				.use(mysqlConnection({ config: { ...configOf(db), connectionLimit: 1, compress }, mode: "pool" }))
				.handler(async (event, context) => {
					if (event.step === "dirty") {
						await context.db.query("SET @leak = 42");
						await context.db.query("CREATE TEMPORARY TABLE leak (a INT)");
						await context.db.query("SET SESSION sql_mode = 'ALLOW_INVALID_DATES'");
						await context.db.query("SET SESSION time_zone = '+05:00'");
						await context.db.execute("SELECT ? AS prepared", [1]);
						await context.db.query("SELECT GET_LOCK('middy_conn_leak', 0)");
						await context.db.query("START TRANSACTION");
					}
					const [rows] = await context.db.query<RowDataPacket[]>(
						`SELECT CONNECTION_ID() AS id, @leak AS leak, @@session.sql_mode AS sqlMode,
					 @@session.time_zone AS timeZone, @@in_transaction AS inTransaction,
					 IS_USED_LOCK('middy_conn_leak') AS lockHolder`,
					);
					const tempTable = await context.db.query("SELECT COUNT(*) FROM leak").then(
						() => true,
						() => false,
					);
					// a statement prepared by execute() in the dirty invocation is gone on the server: the client must
					// not reuse its handle either
					const [prepared] = await context.db.execute<RowDataPacket[]>("SELECT ? AS prepared", [2]);
					return { ...rows[0], tempTable, prepared: prepared[0]?.prepared };
				});
			const dirty = await invoke<RowDataPacket>(handler, { step: "dirty" });
			expect(dirty).toMatchObject({ leak: 42, timeZone: "+05:00", inTransaction: 1, tempTable: true });
			expect(dirty.lockHolder).toBe(dirty.id);
			const clean = await invoke<RowDataPacket>(handler, { step: "look" });
			// the very same server connection, with nothing left of the previous invocation's session
			expect(clean.id).toBe(dirty.id);
			expect(clean).toMatchObject({
				leak: null,
				timeZone: "SYSTEM",
				inTransaction: 0,
				tempTable: false,
				prepared: 2,
				lockHolder: null,
			});
			expect(clean.sqlMode).not.toBe("ALLOW_INVALID_DATES");
		},
	);

	it("never hands out a connection whose reset went unanswered: it is destroyed, and the invocation gets a new one", async () => {
		// The reset is sent when an invocation gives its connection back, and awaited by the next acquire. Here the
		// network path stops carrying bytes right after the first invocation (a frozen path): its reset is never
		// answered, so the session may still hold the first invocation's state.
		const path = await startTcpProxy(db);
		try {
			const stats: MysqlConnectionStats[] = [];
			const { lines, logger } = recordingLogger();
			const handler = freezingFunction(
				path,
				mysqlConnection({
					config: { ...configOf(db), host: path.host, port: path.port, connectionLimit: 1 },
					mode: "pool",
					closeTimeout: 200,
					// no load reading on the frozen path: this is about the reset alone
					serverPressure: false,
					logger,
					onStats: (s) => stats.push(s),
				}),
			);
			const first = await invoke<RowDataPacket>(handler, { dirty: true });
			expect(stats[0]).toMatchObject({ connected: true, closed: "released" });

			const second = await invoke<RowDataPacket>(handler, { dirty: false });

			expect(second.id).not.toBe(first.id);
			expect(second.leak).toBeNull();
			expect(stats[1]).toMatchObject({ connected: true, closed: "released" });
			expect(lines.filter((line) => line.level === "error")).toEqual([]);
		} finally {
			await path.close();
		}
	});

	it("Middy's timeout ends an acquire that waits for the previous invocation's reset answer, and no later invocation gets the connection unanswered", async () => {
		const path = await startTcpProxy(db);
		try {
			const stats: MysqlConnectionStats[] = [];
			const middleware = mysqlConnection({
				config: { ...configOf(db), host: path.host, port: path.port, connectionLimit: 1 },
				mode: "pool",
				closeTimeout: 5000,
				serverPressure: false,
				logger: recordingLogger().logger,
				onStats: (s) => stats.push(s),
			});
			const handler = freezingFunction(path, middleware, { timeoutEarlyInMillis: 250 });
			const first = await invoke<RowDataPacket>(handler, { dirty: true });
			// its acquire waits for the reset's answer, which never comes: Middy's timeout ends the wait
			const second = await outcome(invoke(handler, { dirty: false }, { timeoutMs: 700 }));
			expect(second.error).toMatchObject({ name: "TimeoutError" });
			expect(stats[1]).toMatchObject({ acquired: false });
			// the third waits (at most closeTimeout) for the same answer, gives the connection up, and opens another
			const third = await invoke<RowDataPacket>(handler, { dirty: false });
			expect(third.id).not.toBe(first.id);
			expect(third.leak).toBeNull();
		} finally {
			await path.close();
		}
	});

	it("discards a warm connection that died while idle, before sending any statement", async () => {
		const stats: MysqlConnectionStats[] = [];
		const handler = connectionIdFunction(stats);
		const first = await invoke<number>(handler);
		// a failover, or the server's wait_timeout, closes the idle connection in the pool
		await admin.kill(first);
		await admin.settleConnections(db.user, 0);
		const second = await invoke<number>(handler);
		expect(second).not.toBe(first);
		expect(stats[1]).toMatchObject({ connected: true, closed: "released" });
	});

	it("fails a statement sent on a connection a NAT silently dropped, and does not replay it", async () => {
		const nat = await startTcpProxy(db);
		try {
			await admin.query(
				`CREATE TABLE IF NOT EXISTS \`${db.database}\`.events (id INT AUTO_INCREMENT PRIMARY KEY)`,
			);
			const handler = middy<{ insert: boolean }>()
				.use(
					mysqlConnection({
						config: { ...configOf(db), host: nat.host, port: nat.port },
						mode: "pool",
						logger: false,
					}),
				)
				.handler(async (event, context) => {
					if (event.insert) await context.db.query("INSERT INTO events () VALUES ()");
					return Number((await context.db.query<RowDataPacket[]>(connectionIdQuery))[0][0]?.id);
				});
			const warm = await invoke<number>(handler, { insert: false });
			// frozen past the NAT's idle timeout: the flow is forgotten, and nobody is told (once idle, that is once the
			// reset the connection was released with has been answered)
			expect(await droppedOnceIdle(nat)).toBe(1);
			const { error } = await outcome(invoke(handler, { insert: true }));
			expect(error).toMatchObject({ name: "MiddyConnError", code: "ECONNRESET" });
			expect((error as Error).message).toMatch(/not retried/);
			// the next invocation gets a new connection; the failed INSERT was never replayed
			expect(await invoke<number>(handler, { insert: false })).not.toBe(warm);
			const rows = await admin.query<RowDataPacket[]>(`SELECT COUNT(*) AS n FROM \`${db.database}\`.events`);
			expect(rows[0]?.n).toBe(0);
		} finally {
			await nat.close();
		}
	});

	it("never sends a statement on a connection idle longer than idleTimeout, so a NAT drop goes unnoticed", async () => {
		const nat = await startTcpProxy(db);
		try {
			const handler = middy()
				.use(
					mysqlConnection({
						config: { ...configOf(db), host: nat.host, port: nat.port, idleTimeout: 50 },
						mode: "pool",
						logger: false,
					}),
				)
				.handler(async (_event, context) =>
					Number((await context.db.query<RowDataPacket[]>(connectionIdQuery))[0][0]?.id),
				);
			const warm = await invoke<number>(handler);
			await new Promise((resolve) => setTimeout(resolve, 100));
			expect(nat.dropIdle()).toBe(1);
			expect(await invoke<number>(handler)).not.toBe(warm);
		} finally {
			await nat.close();
		}
	});

	it("does not reuse a connection idle longer than idleTimeout (mysql2's idle timer does not run while frozen)", async () => {
		const handler = middy()
			.use(mysqlConnection({ config: { ...configOf(db), idleTimeout: 50 }, mode: "pool" }))
			.handler(async (_event, context) =>
				Number((await context.db.query<RowDataPacket[]>(connectionIdQuery))[0][0]?.id),
			);
		const first = await invoke<number>(handler);
		await new Promise((resolve) => setTimeout(resolve, 120));
		const second = await invoke<number>(handler);
		expect(second).not.toBe(first);
		expect(await admin.settleConnections(db.user, 1)).toBe(1);
	});

	it("calls a config function when the pool has to connect, so a rotated password reaches new connections", async () => {
		let password = db.password;
		let calls = 0;
		const handler = middy()
			.use(
				mysqlConnection({
					config: async (): Promise<MysqlConfig> => {
						calls += 1;
						return { ...configOf(db), password, connectionLimit: 1 };
					},
					mode: "pool",
					logger: recordingLogger().logger,
				}),
			)
			.handler(async (_event, context) =>
				Number((await context.db.query<RowDataPacket[]>(connectionIdQuery))[0][0]?.id),
			);
		const first = await invoke<number>(handler);
		expect(calls).toBe(1);
		// warm: a free connection is there, no need to ask for credentials
		expect(await invoke<number>(handler)).toBe(first);
		expect(calls).toBe(1);
		// the password rotates, and the warm connection goes away
		password = `${db.password}-rotated`;
		await admin.query(`ALTER USER '${db.user}'@'%' IDENTIFIED BY ?`, [password]);
		await admin.kill(first);
		await admin.settleConnections(db.user, 0);
		const third = await invoke<number>(handler);
		expect(third).not.toBe(first);
		expect(calls).toBe(2);
		await admin.query(`ALTER USER '${db.user}'@'%' IDENTIFIED BY ?`, [db.password]);
	});

	it("gives back a connection that arrives after its invocation timed out waiting for it", async () => {
		const handler = middy<{ hold: number }>()
			.use(mysqlConnection({ config: { ...configOf(db), connectionLimit: 1 }, mode: "pool", logger: false }))
			.handler(async (event, context) => {
				const [rows] = await context.db.query<RowDataPacket[]>(
					"SELECT CONNECTION_ID() AS id, SLEEP(?) AS s",
					[event.hold],
				);
				return Number(rows[0]?.id);
			});
		// the first holds the only connection; the second waits in the pool's queue until Middy's timeout
		const holding = invoke<number>(handler, { hold: 0.5 });
		const waiting = await invoke(handler, { hold: 0 }, { timeoutMs: 150 }).then(
			() => undefined,
			(error: Error) => error.name,
		);
		expect(waiting).toBe("TimeoutError");
		const first = await holding;
		// the connection handed to the timed-out invocation went back to the pool, unused: the next one gets it
		expect(await invoke<number>(handler, { hold: 0 })).toBe(first);
		expect(await admin.connectionsOf(db.user)).toBe(1);
	});

	it("shares one warm pool between middlewares with the same target, whatever their password", async () => {
		const ids: number[] = [];
		for (const password of [db.password, db.password]) {
			const handler = middy()
				.use(mysqlConnection({ config: { ...configOf(db), password }, mode: "pool" }))
				.handler(async (_event, context) =>
					Number((await context.db.query<RowDataPacket[]>(connectionIdQuery))[0][0]?.id),
				);
			ids.push(await invoke<number>(handler));
		}
		expect(ids[1]).toBe(ids[0]);
	});
});

describe.each(["scoped", "pool"] as const)("mode %s: concurrent invocations in one process", (mode) => {
	it("gives each concurrent invocation its own connection", async () => {
		const handler = middy()
			.use(
				mysqlConnection({
					config: { ...configOf(db), ...(mode === "pool" ? { connectionLimit: 5 } : {}) },
					mode,
				}),
			)
			.handler(async (_event, context) => {
				// hold the connection long enough for all five to be in flight at once
				const [rows] = await context.db.query<RowDataPacket[]>(
					"SELECT CONNECTION_ID() AS id, SLEEP(0.2) AS s",
				);
				const [again] = await context.db.query<RowDataPacket[]>(connectionIdQuery);
				expect(again[0]?.id).toBe(rows[0]?.id);
				return Number(rows[0]?.id);
			});
		const ids = await Promise.all(Array.from({ length: 5 }, () => invoke<number>(handler)));
		expect(new Set(ids).size).toBe(5);
	});
});
