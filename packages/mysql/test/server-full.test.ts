// A server that is full, or nearly. Connect under pressure: when the server refuses a connect because it is full
// (max_connections, or the user's own connection limit), the connect is tried again after a jittered wait,
// bounded by attempts and by the invocation's remaining time, and counted in the stats. Only the connect is ever
// retried, never a statement. Pool mode under pressure: while the server's connections in use reach the
// threshold, a pool ends each invocation's connection instead of keeping it warm (idle while Lambda has the
// environment frozen, it would hold a slot that another environment needs).
//
// The refusals are real: a user whose MAX_USER_CONNECTIONS is taken by a connection the test holds
// (ER_USER_LIMIT_REACHED), and a server of the test's own whose max_connections (ER_CON_COUNT_ERROR) or global
// max_user_connections (ER_TOO_MANY_USER_CONNECTIONS) is reached. A TCP proxy in front counts the connects the
// middleware makes, so that the test frees the slot only once a connect has been refused (no timing is assumed).
import middy from "@middy/core";
import {
	MysqlAdmin,
	type MysqlServer,
	startMysqlServer,
	startTcpProxy,
	type TcpProxy,
	type TestDatabase,
} from "@middy-conn/test-harness";
import { useTestDatabase } from "@middy-conn/test-harness/test-fixtures";
import mysql, { type RowDataPacket } from "mysql2/promise";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import {
	closeMysqlPools,
	type MysqlConnectionOptions,
	type MysqlConnectionStats,
	mysqlConnection,
} from "../src/index.ts";
import { configOf, invoke, outcome } from "./helpers.ts";

const modes = ["scoped", "pool"] as const;

/** Resolves once `proxy` has accepted `count` connections (bounded: fails after 10 s). */
const connectsSeen = async (proxy: TcpProxy, count: number): Promise<void> => {
	for (let i = 0; i < 1000 && proxy.stats.connections < count; i += 1) {
		await new Promise((resolve) => setTimeout(resolve, 10));
	}
	if (proxy.stats.connections < count) throw new Error(`only ${proxy.stats.connections} connects seen`);
};

/**
 * A handler that counts its statements' effects in table `runs`, behind `mysqlConnection(options)`, with Middy's
 * own early timeout at `timeoutEarlyInMillis` (Middy's default when undefined; 0 turns it off).
 */
const handlerWith = (
	options: MysqlConnectionOptions,
	stats: MysqlConnectionStats[],
	timeoutEarlyInMillis?: number,
) =>
	middy(timeoutEarlyInMillis === undefined ? {} : { timeoutEarlyInMillis })
		.use(mysqlConnection({ logger: false, onStats: (s) => stats.push(s), ...options }))
		.handler(async (_event, context) => {
			await context.db.query("INSERT INTO runs () VALUES ()");
			const [rows] = await context.db.query<RowDataPacket[]>("SELECT COUNT(*) AS n FROM runs");
			return Number(rows[0]?.n);
		});

describe("a user's connection limit is reached (MAX_USER_CONNECTIONS)", () => {
	const { admin, db } = useTestDatabase("mysql_connect_retry", {
		tables: ["runs (id INT AUTO_INCREMENT PRIMARY KEY)"],
		seed: (admin, db) => admin.query(`ALTER USER '${db.user}'@'%' WITH MAX_USER_CONNECTIONS 1`),
		clear: ["runs"],
		settle: "wait",
	});
	let proxy: TcpProxy;
	/** The connection that takes the user's only slot. */
	let holder: mysql.Connection | undefined;

	beforeAll(async () => {
		proxy = await startTcpProxy(db);
	});

	// Runs before the fixture's afterEach (registered later), which then deletes the runs and settles.
	afterEach(async () => {
		await holder?.end().catch(() => {});
		holder = undefined;
		await closeMysqlPools();
	});

	afterAll(async () => {
		await proxy.close();
	});

	const viaProxy = () => ({ ...configOf(db), host: proxy.host, port: proxy.port });

	/**
	 * The user's only slot taken (by `holder`), and a handler connecting through the proxy with `options`: what it
	 * reports, and how many connects the proxy had seen before it ran.
	 */
	const withTheSlotTaken = async (
		options: Omit<MysqlConnectionOptions, "config">,
		timeoutEarlyInMillis?: number,
	) => {
		holder = await mysql.createConnection(configOf(db));
		const stats: MysqlConnectionStats[] = [];
		const handler = handlerWith({ ...options, config: viaProxy() }, stats, timeoutEarlyInMillis);
		return { stats, handler, before: proxy.stats.connections };
	};

	it.each(modes)(
		"mode %s: retries the refused connect and serves the invocation once the slot is free",
		async (mode) => {
			const { stats, handler, before } = await withTheSlotTaken({ mode });

			const result = outcome(invoke<number>(handler, {}, { timeoutMs: 30_000 }));
			// the first connect is refused, and a second one is on its way: only now is the slot given back
			await connectsSeen(proxy, before + 2);
			await holder?.end();
			holder = undefined;

			expect(await result).toEqual({ value: 1 });
			expect(stats).toHaveLength(1);
			expect(stats[0]?.connectRetries).toBeGreaterThanOrEqual(1);
			expect(stats[0]?.connected).toBe(true);
		},
	);

	it.each(modes)("mode %s: fails at once with the server's code when connectRetry is false", async (mode) => {
		const { stats, handler, before } = await withTheSlotTaken({ mode, connectRetry: false });

		const { error } = await outcome(invoke(handler));

		expect(error).toMatchObject({ name: "MiddyConnError", code: "ER_USER_LIMIT_REACHED" });
		expect((error as Error).message).toMatch(/user's connection limit is reached/);
		expect((error as Error).message).not.toMatch(/after \d+ retr/);
		expect((error as Error).message).not.toContain(db.password);
		expect(proxy.stats.connections - before).toBe(1);
		expect(stats[0]).toMatchObject({ connectRetries: 0, connected: false });
	});

	it.each(modes)("mode %s: stops after `attempts` connects, and says how often it retried", async (mode) => {
		const { stats, handler, before } = await withTheSlotTaken({
			mode,
			connectRetry: { attempts: 3, baseDelay: 1, maxDelay: 5 },
		});

		const { error } = await outcome(invoke(handler, {}, { timeoutMs: 30_000 }));

		expect(error).toMatchObject({ name: "MiddyConnError", code: "ER_USER_LIMIT_REACHED" });
		expect((error as Error).message).toMatch(/still refused after 2 retries/);
		expect((error as Error).cause).toMatchObject({ code: "ER_USER_LIMIT_REACHED" });
		expect(proxy.stats.connections - before).toBe(3);
		expect(stats[0]).toMatchObject({ connectRetries: 2, connected: false });
	});

	it.each(modes)("mode %s: does not wait past the invocation's remaining time", async (mode) => {
		// every wait may be up to 60 s, far more than the 50 ms left: no retry can finish in time
		const { stats, handler, before } = await withTheSlotTaken({
			mode,
			connectRetry: { attempts: 100, baseDelay: 60_000, maxDelay: 60_000 },
		});

		const { error } = await outcome(invoke(handler, {}, { timeoutMs: 50 }));

		expect(error).toMatchObject({ code: "ER_USER_LIMIT_REACHED" });
		expect(proxy.stats.connections - before).toBeLessThanOrEqual(2);
		expect(stats[0]?.connected).toBe(false);
	});

	it.each(modes)(
		"mode %s: retries while time is left, then stops with the last refusal when the next wait would not fit",
		async (mode) => {
			// Waits of up to 20 ms, 100 attempts (about a second of them): only the 300 ms the invocation has can stop
			// the retries. Middy's own timeout is off, so that it is the retry that gives up, not Middy.
			const { stats, handler, before } = await withTheSlotTaken(
				{ mode, connectRetry: { attempts: 100, baseDelay: 20, maxDelay: 20 } },
				0,
			);

			const { error } = await outcome(invoke(handler, {}, { timeoutMs: 300 }));

			expect(error).toMatchObject({ name: "MiddyConnError", code: "ER_USER_LIMIT_REACHED" });
			expect((error as Error).cause).toMatchObject({ code: "ER_USER_LIMIT_REACHED" });
			expect((error as Error).message).toMatch(/connection limit is reached/);
			expect((error as Error).message).toMatch(
				/still refused after \d+ retries: see the connectRetry option/,
			);
			const retries = stats[0]?.connectRetries ?? 0;
			// several retries, and far fewer than the attempts allowed: the remaining time stopped them
			expect(retries).toBeGreaterThan(1);
			expect(retries).toBeLessThan(99);
			expect((error as Error).message).toContain(`after ${retries} retries`);
			expect(proxy.stats.connections - before).toBe(retries + 1);
			expect(stats[0]?.connected).toBe(false);
		},
	);

	it.each(modes)(
		"mode %s: Middy's timeout ends the wait at once, and leaves no connection behind",
		async (mode) => {
			// Middy times out 50 ms into a 300 ms invocation, while refused connects are still being retried
			const { stats, handler } = await withTheSlotTaken(
				{ mode, connectRetry: { attempts: 100, baseDelay: 5, maxDelay: 5 } },
				250,
			);

			const { error } = await outcome(invoke(handler, {}, { timeoutMs: 300 }));

			expect(error).toMatchObject({ name: "TimeoutError" });
			expect(stats[0]?.connected).toBe(false);
			expect(stats[0]?.connectRetries).toBeLessThan(99);
			await holder?.end();
			holder = undefined;
			// pool mode may keep a connection it opened once Middy had given up: unused, warm in the pool
			expect(await admin.settleConnections(db.user, 0)).toBeLessThanOrEqual(mode === "pool" ? 1 : 0);
		},
	);

	it.each(modes)(
		"mode %s: never retries a statement, even one that fails with a full server's code",
		async (mode) => {
			const stats: MysqlConnectionStats[] = [];
			const handler = middy()
				.use(mysqlConnection({ mode, config: viaProxy(), logger: false, onStats: (s) => stats.push(s) }))
				.handler(async (_event, context) => {
					// applied, then failed with ER_CON_COUNT_ERROR's number: a statement's error, not a refused connect
					await context.db.query("INSERT INTO runs () VALUES ()");
					await context.db.query(
						"SIGNAL SQLSTATE '08004' SET MYSQL_ERRNO = 1040, MESSAGE_TEXT = 'Too many connections'",
					);
				});
			const before = proxy.stats.connections;

			const { error } = await outcome(invoke(handler));

			expect(error).toMatchObject({ code: "ER_CON_COUNT_ERROR" });
			expect(stats[0]).toMatchObject({ connectRetries: 0, queries: 2 });
			// one connect, and the failed statement was not sent again on it nor on another
			expect(proxy.stats.connections - before).toBe(1);
			const rows = await admin.query<RowDataPacket[]>(`SELECT COUNT(*) AS n FROM \`${db.database}\`.runs`);
			expect(rows[0]?.n).toBe(1);
		},
	);
});

describe("the server is full (a server of this test's own: its global limits change)", () => {
	let server: MysqlServer;
	let admin: MysqlAdmin;
	let db: TestDatabase;
	let proxy: TcpProxy;
	const held: mysql.Connection[] = [];

	beforeAll(async () => {
		// max_user_connections can be changed at run time only on a server started with it non-zero
		server = await startMysqlServer({ dedicated: true, maxUserConnections: 1000 });
		admin = await MysqlAdmin.connect(server.adminUrl);
		db = await admin.createDatabase("mysql_server_full");
		await admin.query(`CREATE TABLE \`${db.database}\`.runs (id INT AUTO_INCREMENT PRIMARY KEY)`);
		proxy = await startTcpProxy(db);
	}, 60_000);

	afterEach(async () => {
		await Promise.all(held.splice(0).map((connection) => connection.end().catch(() => {})));
		await closeMysqlPools();
		await admin.setGlobal("max_connections", 1000);
		await admin.query(`DELETE FROM \`${db.database}\`.runs`);
		await admin.settleConnections(db.user, 0);
	});

	afterAll(async () => {
		await proxy?.close();
		await admin?.close();
		await server?.stop();
	});

	/** Fills the server: max_connections at its smallest (10), and connections of the user until one is refused. */
	const fillServer = async () => {
		await admin.setGlobal("max_connections", 10);
		for (let i = 0; i < 20; i += 1) {
			try {
				held.push(await mysql.createConnection(configOf(db)));
			} catch (error) {
				expect(error).toMatchObject({ code: "ER_CON_COUNT_ERROR" });
				return;
			}
		}
		throw new Error("the server never refused a connection");
	};

	/**
	 * Invokes a handler of `mode` through the proxy while the server refuses its connects, and frees one connection
	 * once a retry is on its way (the first connect refused, a second one sent): what the invocation got and reported.
	 */
	const servedOnceAConnectionCloses = async (mode: (typeof modes)[number]) => {
		const stats: MysqlConnectionStats[] = [];
		const handler = handlerWith(
			{ mode, config: { ...configOf(db), host: proxy.host, port: proxy.port } },
			stats,
		);
		const before = proxy.stats.connections;
		const result = outcome(invoke<number>(handler, {}, { timeoutMs: 30_000 }));
		await connectsSeen(proxy, before + 2);
		await held.pop()?.end();
		return { result: await result, stats };
	};

	describe("its global max_user_connections is reached (ER_TOO_MANY_USER_CONNECTIONS)", () => {
		// Any one account may hold 1 connection: the test's holder takes the user's. (The admin's connection is open
		// already: the limit is checked at connect.)
		beforeEach(async () => {
			await admin.setGlobal("max_user_connections", 1);
			held.push(await mysql.createConnection(configOf(db)));
		});

		// Runs before the outer afterEach, which ends the holder.
		afterEach(async () => {
			await admin.setGlobal("max_user_connections", 1000);
		});

		it("refuses the user's next connect with ER_TOO_MANY_USER_CONNECTIONS, not retried with connectRetry: false", async () => {
			await expect(mysql.createConnection(configOf(db))).rejects.toMatchObject({
				code: "ER_TOO_MANY_USER_CONNECTIONS",
			});
			const stats: MysqlConnectionStats[] = [];
			const handler = handlerWith({ config: configOf(db), connectRetry: false }, stats);

			const { error } = await outcome(invoke(handler));

			expect(error).toMatchObject({ name: "MiddyConnError", code: "ER_TOO_MANY_USER_CONNECTIONS" });
			expect((error as Error).message).toMatch(/user's connection limit is reached/);
			expect(stats[0]).toMatchObject({ connectRetries: 0, connected: false });
		});

		it.each(modes)(
			"mode %s: retries it, and is served once the user's other connection closes",
			async (mode) => {
				const { result, stats } = await servedOnceAConnectionCloses(mode);

				expect(result).toEqual({ value: 1 });
				expect(stats[0]?.connectRetries).toBeGreaterThanOrEqual(1);
				expect(stats[0]?.connected).toBe(true);
			},
		);
	});

	it.each(modes)(
		"mode %s: retries ER_CON_COUNT_ERROR and is served when another environment's connection closes",
		async (mode) => {
			await fillServer();
			const { result, stats } = await servedOnceAConnectionCloses(mode);

			expect(result).toEqual({ value: 1 });
			expect(stats[0]?.connectRetries).toBeGreaterThanOrEqual(1);
		},
	);

	it("names max_connections and the retries when the server stays full", async () => {
		await fillServer();
		const handler = handlerWith(
			{ config: configOf(db), connectRetry: { attempts: 2, baseDelay: 1, maxDelay: 1 } },
			[],
		);

		const { error } = await outcome(invoke(handler));

		expect(error).toMatchObject({ name: "MiddyConnError", code: "ER_CON_COUNT_ERROR" });
		expect((error as Error).message).toMatch(/max_connections is reached/);
		expect((error as Error).message).toMatch(/still refused after 1 retry/);
	});

	describe("pool mode under server pressure", () => {
		const poolHandler = (stats: MysqlConnectionStats[], extra: Partial<MysqlConnectionOptions> = {}) =>
			handlerWith(
				{
					mode: "pool",
					config: { ...configOf(db), host: proxy.host, port: proxy.port, connectionLimit: 1 },
					serverPressure: { threshold: 0.8, checkInterval: 0 },
					...extra,
				},
				stats,
			);

		/** Holds connections of the user until `count` threads are connected on a server of max_connections 10. */
		const loadServer = async (count: number) => {
			await admin.setGlobal("max_connections", 10);
			while ((await admin.threadsConnected()) < count) held.push(await mysql.createConnection(configOf(db)));
		};

		it("ends the invocation's connection instead of keeping it warm while the server is near full", async () => {
			await loadServer(8);
			const stats: MysqlConnectionStats[] = [];
			const handler = poolHandler(stats);

			expect(await invoke<number>(handler)).toBe(1);

			expect(stats[0]).toMatchObject({ connected: true, closed: "ended" });
			// nothing of the pool's is left on the server: only the connections the test holds
			expect(await admin.settleConnections(db.user, held.length)).toBe(held.length);
		});

		it("keeps connections warm again once the load has fallen", async () => {
			await loadServer(8);
			const stats: MysqlConnectionStats[] = [];
			const handler = poolHandler(stats);
			await invoke(handler);
			await Promise.all(held.splice(0).map((connection) => connection.end()));
			await admin.settleConnections(db.user, 0);

			await invoke(handler);
			await invoke(handler);

			expect(stats.map((s) => s.closed)).toEqual(["ended", "released", "released"]);
			expect(stats.map((s) => s.connected)).toEqual([true, true, false]);
			expect(await admin.settleConnections(db.user, 1)).toBe(1);
		});

		it("keeps them warm whatever the load with serverPressure: false", async () => {
			await loadServer(8);
			const stats: MysqlConnectionStats[] = [];
			const handler = poolHandler(stats, { serverPressure: false });

			await invoke(handler);

			expect(stats[0]?.closed).toBe("released");
			expect(await admin.settleConnections(db.user, held.length + 1)).toBe(held.length + 1);
		});

		it("takes a refused connect as a reading: the connection it finally got is not kept", async () => {
			const stats: MysqlConnectionStats[] = [];
			// a reading is due only once a minute: the first invocation reads a low load and keeps its connection
			const handler = poolHandler(stats, { serverPressure: { checkInterval: 60_000 } });
			await invoke(handler);
			expect(stats[0]?.closed).toBe("released");
			// the warm connection dies (a failover), and the server fills up meanwhile
			await admin.killUser(db.user);
			await admin.settleConnections(db.user, 0);
			await fillServer();
			const before = proxy.stats.connections;

			const result = outcome(invoke<number>(handler, {}, { timeoutMs: 30_000 }));
			await connectsSeen(proxy, before + 2);
			await held.pop()?.end();

			expect(await result).toEqual({ value: 2 });
			expect(stats[1]).toMatchObject({ connected: true, closed: "ended" });
			expect(stats[1]?.connectRetries).toBeGreaterThanOrEqual(1);
		});
	});
});
