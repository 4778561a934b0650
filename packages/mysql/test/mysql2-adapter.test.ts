// mysql2-adapter.ts holds everything this package relies on in mysql2 beyond its documented API (its socket, its
// command queue, its pool's internals and the config it opens connections with, its ConnectionConfig). Each of its functions is exercised here on its own,
// against real mysql2 objects talking to the run's MariaDB: a mysql2 release that changes one of those internals
// fails the test named after the function, not some distant behaviour test.
//
// Run on the latest mysql2 (the lockfile's) and, with MIDDY_CONN_DRIVERS=floor, on the lowest the peer range
// allows (.ci/run runs both). The first test checks which one this run really loaded, in this file and in the
// adapter's own import.
import { type AddressInfo, createServer, type Socket, connect as tcpConnect } from "node:net";
import { MiddyConnError } from "@middy-conn/lifecycle";
import { MysqlAdmin, startTcpProxy, type TcpProxy, type TestDatabase } from "@middy-conn/test-harness";
import mysqlCore from "mysql2";
import mysql from "mysql2/promise";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import {
	driversSetting,
	expectedDriverVersion,
	installedDriver,
	loadedDriverVersion,
} from "../../../test/drivers.ts";
import { destroyedError, errorCodes } from "../src/errors.ts";
import {
	type Core,
	commandInFlight,
	coreOf,
	destroyHard,
	failCommandInFlight,
	isDead,
	isFatal,
	mayOpenConnection,
	mysql2OptionNames,
	optionsMysql2Ignores,
	parseMysqlUrl,
	poolLimits,
	setNextConnectionSecrets,
	socketClosed,
} from "../src/mysql2-adapter.ts";
import { resolveConfig } from "../src/options.ts";
import { configOf, outcome } from "./helpers.ts";

const drivers = driversSetting();
const version = loadedDriverVersion("mysql2", mysqlCore);

let admin: MysqlAdmin;
let db: TestDatabase;
/** Everything a test opened, destroyed after it whatever happened. */
const opened: { destroy(): unknown }[] = [];
const proxies: TcpProxy[] = [];

beforeAll(async () => {
	admin = await MysqlAdmin.connect();
	db = await admin.createDatabase("mysql2_adapter");
});

afterEach(async () => {
	for (const resource of opened.splice(0)) {
		try {
			resource.destroy();
		} catch {
			// already closed
		}
	}
	await Promise.all(proxies.splice(0).map((proxy) => proxy.close()));
	await admin.killUser(db.user);
	await admin.settleConnections(db.user, 0);
});

afterAll(async () => {
	await admin.dropDatabase(db);
	await admin.close();
});

/** A connection of the file's user, optionally through `via` (a proxy). Its core ignores 'error' events. */
const connect = async (via?: { host: string; port: number }) => {
	const connection = await mysql.createConnection({
		...configOf(db),
		...(via ? { host: via.host, port: via.port } : {}),
	});
	opened.push(connection);
	const core = coreOf(connection);
	core.on("error", () => {});
	return { connection, core };
};

const pool = (options: mysql.PoolOptions = {}) => {
	const created = mysql.createPool({ ...configOf(db), ...options });
	opened.push({ destroy: () => void created.end().catch(() => {}) });
	return created;
};

/** Fails instead of hanging when `promise` does not settle within `ms`. */
const within = <T>(promise: Promise<T>, ms: number, what: string): Promise<T> =>
	Promise.race([
		promise,
		new Promise<never>((_, reject) =>
			setTimeout(() => reject(new Error(`${what}: still pending after ${ms} ms`)), ms).unref(),
		),
	]);

/** Resolves once the server shows `threadId` running a statement (not sleeping between commands). */
const runningOnServer = async (threadId: number) => {
	const deadline = Date.now() + 5000;
	while (Date.now() < deadline) {
		const row = (await admin.processlist(db.user)).find((process) => process.id === threadId);
		if (row?.command === "Query") return;
		await new Promise((resolve) => setTimeout(resolve, 10));
	}
	throw new Error(`connection ${threadId} never showed its statement running`);
};

/** What a query stream did: its error, or "end". */
const streamOutcome = (stream: NodeJS.ReadableStream): Promise<unknown> =>
	new Promise((resolve) => {
		stream.once("error", resolve);
		stream.once("end", () => resolve("end"));
		stream.resume();
	});

/**
 * A loopback proxy to the server that passes on its greeting and nothing else, in either direction: a handshake
 * that stalls once begun (an overloaded server, a proxy waiting for a backend).
 */
const greetingThenSilence = async (target: { host: string; port: number }) => {
	let greeted = 0;
	const sockets = new Set<Socket>();
	const server = createServer((client) => {
		const upstream = tcpConnect(target);
		for (const socket of [client, upstream]) {
			sockets.add(socket);
			socket.on("error", () => {});
			socket.on("close", () => sockets.delete(socket));
		}
		upstream.once("data", (greeting: Buffer) => {
			greeted += 1;
			client.write(greeting);
		});
		client.on("close", () => upstream.destroy());
	});
	await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
	return {
		port: (server.address() as AddressInfo).port,
		greeted: () => greeted,
		close: () =>
			new Promise<void>((resolve) => {
				for (const socket of sockets) socket.destroy();
				server.close(() => resolve());
			}),
	};
};

describe(`mysql2-adapter on mysql2 ${version} (MIDDY_CONN_DRIVERS=${drivers})`, () => {
	it("runs on the mysql2 the setting selects, in the tests and in the adapter's own import", () => {
		expect(version).toBe(expectedDriverVersion("mysql2"));
		// The two runs (latest, floor) test two different versions: a floor equal to the latest would test one.
		expect(expectedDriverVersion("mysql2", "floor")).not.toBe(expectedDriverVersion("mysql2", "latest"));
		expect(loadedDriverVersion("mysql2/promise", mysql)).toBe(version);
		// The adapter imports mysql2 itself: its URL parser must be that very copy's.
		const installed = installedDriver("mysql2") as unknown as {
			ConnectionConfig: { parseUrl(url: string): unknown };
		};
		const parseUrl = vi.spyOn(installed.ConnectionConfig, "parseUrl");
		try {
			parseMysqlUrl("mysql://u:p@db.internal:3306/app");
			expect(parseUrl).toHaveBeenCalledOnce();
		} finally {
			parseUrl.mockRestore();
		}
	});

	describe("isDead", () => {
		it("is false for an open connection", async () => {
			const { core } = await connect();
			expect(isDead(core)).toBe(false);
		});

		it("is true once the server has killed the connection", async () => {
			const { core } = await connect();
			const closed = socketClosed(core);
			await admin.kill(core.threadId);
			await within(closed, 5000, "socket close after KILL");
			expect(isDead(core)).toBe(true);
		});

		it("is true at once after destroy()", async () => {
			const { core } = await connect();
			core.destroy();
			expect(isDead(core)).toBe(true);
		});

		it("is true at once after destroyHard()", async () => {
			const { core } = await connect();
			destroyHard(core, new Error("test"));
			expect(isDead(core)).toBe(true);
		});
	});

	describe("isFatal", () => {
		it("is true for the error of a statement whose connection was killed", async () => {
			const { connection, core } = await connect();
			const sleeping = outcome(connection.query("SELECT SLEEP(10)"));
			await runningOnServer(core.threadId);
			await admin.kill(core.threadId);
			const { error } = await within(sleeping, 5000, "the killed statement");
			expect(error).toBeDefined();
			expect(isFatal(error)).toBe(true);
		});

		it("is false for a statement's own error", async () => {
			const { connection } = await connect();
			const { error } = await outcome(connection.query("SELECT * FROM no_such_table"));
			expect((error as { code?: string }).code).toBe("ER_NO_SUCH_TABLE");
			expect(isFatal(error)).toBe(false);
		});
	});

	describe("destroyHard", () => {
		/** A statement on the core (callback) connection: what mysql2 hands its callback, untouched. */
		const sleepOnCore = (core: Core) =>
			new Promise<unknown>((resolve) => core.query("SELECT SLEEP(10)", (error) => resolve(error)));

		it("fails a statement in flight with the package's destroyed error as given, and closes the socket", async () => {
			const { core } = await connect();
			const sleeping = sleepOnCore(core);
			await runningOnServer(core.threadId);
			destroyHard(core, destroyedError("the test gave it up"));
			const error = await within(sleeping, 2000, "the statement of a destroyed connection");
			expect(error).toBeInstanceOf(MiddyConnError);
			expect((error as MiddyConnError).message).toBe("MySQL connection destroyed: the test gave it up");
			expect((error as MiddyConnError).code).toBe(errorCodes.destroyed);
			expect(isDead(core)).toBe(true);
			// The socket is gone at once (the server notices when the statement ends: stopping it is a KILL's job).
			expect(core.stream?.destroyed).toBe(true);
		});

		it("fails a statement in flight with the very Error given", async () => {
			const { core } = await connect();
			const sleeping = sleepOnCore(core);
			await runningOnServer(core.threadId);
			const reason = new Error("interrupted by the test");
			destroyHard(core, reason);
			expect(await within(sleeping, 2000, "the statement of a destroyed connection")).toBe(reason);
		});

		it("fails a statement of the promise API too, with the reason's message and code", async () => {
			const { connection, core } = await connect();
			const sleeping = outcome(connection.query("SELECT SLEEP(10)"));
			await runningOnServer(core.threadId);
			destroyHard(core, destroyedError("the test gave it up"));
			const { error } = await within(sleeping, 2000, "the statement of a destroyed connection");
			expect(error).toMatchObject({
				message: "MySQL connection destroyed: the test gave it up",
				code: errorCodes.destroyed,
			});
		});

		it("fails a statement still queued behind the one in flight", async () => {
			const { connection, core } = await connect();
			const first = outcome(connection.query("SELECT SLEEP(10)"));
			const queued = outcome(connection.query("SELECT 1"));
			await runningOnServer(core.threadId);
			destroyHard(core, destroyedError("the test gave it up"));
			const settled = await within(
				Promise.all([first, queued]),
				2000,
				"the destroyed connection's statements",
			);
			for (const { error } of settled) expect(error).toBeInstanceOf(Error);
		});

		it("is harmless on a connection already closed", async () => {
			const { connection, core } = await connect();
			await connection.end();
			expect(() => destroyHard(core, destroyedError("again"))).not.toThrow();
			expect(isDead(core)).toBe(true);
		});

		it("takes a pooled connection out of its pool", async () => {
			const limited = pool({ connectionLimit: 1 });
			const pooled = await limited.getConnection();
			const core = coreOf(pooled);
			core.on("error", () => {});
			const first = core.threadId;
			destroyHard(core, destroyedError("stale"));
			const next = await within(
				limited.getConnection(),
				2000,
				"a connection after the only one was destroyed",
			);
			expect(coreOf(next).threadId).not.toBe(first);
			next.release();
		});
	});

	describe("socketClosed", () => {
		it("resolves once end() has closed the session", async () => {
			const { connection, core } = await connect();
			const closed = socketClosed(core);
			await connection.end();
			await within(closed, 2000, "socketClosed after end()");
			expect(core.stream?.destroyed).toBe(true);
		});

		it("resolves at once for a socket already closed", async () => {
			const { connection, core } = await connect();
			await connection.end();
			await within(socketClosed(core), 2000, "socketClosed after end()");
			await within(socketClosed(core), 50, "socketClosed of a closed socket");
		});

		it("stays pending while the connection is open", async () => {
			const { core } = await connect();
			const early = await Promise.race([
				socketClosed(core).then(() => "closed"),
				new Promise((resolve) => setTimeout(() => resolve("open"), 100)),
			]);
			expect(early).toBe("open");
		});
	});

	describe("commandInFlight", () => {
		it("is true while a statement runs and false before and after", async () => {
			const { connection, core } = await connect();
			expect(commandInFlight(core)).toBe(false);
			const running = connection.query("SELECT SLEEP(0.3)");
			expect(commandInFlight(core)).toBe(true);
			await running;
			expect(commandInFlight(core)).toBe(false);
		});

		it("is true while a query stream is being read, and false once it has ended", async () => {
			const { core } = await connect();
			const stream = core.query("SELECT SLEEP(0.2) AS slept UNION ALL SELECT 1").stream();
			expect(commandInFlight(core)).toBe(true);
			expect(await streamOutcome(stream)).toBe("end");
			expect(commandInFlight(core)).toBe(false);
		});

		it("counts statements queued behind the current one", async () => {
			const { connection, core } = await connect();
			const first = connection.query("SELECT SLEEP(0.2)");
			const second = connection.query("SELECT SLEEP(0.2)");
			await first;
			expect(commandInFlight(core)).toBe(true);
			await second;
			expect(commandInFlight(core)).toBe(false);
		});
	});

	describe("failCommandInFlight", () => {
		it("makes a query stream fail when its connection is lost (mysql2 tells only commands with a callback)", async () => {
			const proxy = await startTcpProxy({ host: db.host, port: db.port });
			proxies.push(proxy);
			const { core } = await connect(proxy);
			const lost: unknown[] = [];
			core.on("error", (error) => {
				lost.push(error);
				failCommandInFlight(core, error);
			});
			const stream = core.query("SELECT SLEEP(10)").stream();
			const result = streamOutcome(stream);
			await runningOnServer(core.threadId);
			proxy.resetAll();
			const error = await within(result, 2000, "the stream of a lost connection");
			expect(lost).toHaveLength(1);
			expect(error).toBe(lost[0]);
			expect(isFatal(error)).toBe(true);
		});

		it("leaves a command with a callback alone: mysql2 reports to it", async () => {
			const { core } = await connect();
			const result = new Promise<{ error: unknown; rows: unknown }>((resolve) =>
				core.query("SELECT SLEEP(0.2) AS slept", (error, rows) => resolve({ error, rows })),
			);
			failCommandInFlight(core, new Error("not for this command"));
			const { error, rows } = await within(result, 2000, "the callback query");
			expect(error).toBeNull();
			expect(rows).toEqual([{ slept: 0 }]);
		});

		it("leaves a command without an error listener alone", async () => {
			const { core } = await connect();
			const query = core.query("SELECT SLEEP(0.2)");
			const ended = new Promise((resolve) => query.once("end", resolve));
			expect(() => failCommandInFlight(core, new Error("nobody listens"))).not.toThrow();
			await within(ended, 2000, "the query nobody listens to");
		});

		it("does nothing on an idle connection", async () => {
			const { connection, core } = await connect();
			failCommandInFlight(core, new Error("nothing in flight"));
			const [rows] = await connection.query("SELECT 1 AS one");
			expect(rows).toEqual([{ one: 1 }]);
		});
	});

	describe("pool internals", () => {
		it("mayOpenConnection: true when the pool has no free connection, false when it has one", async () => {
			const limited = pool({ connectionLimit: 2 });
			expect(mayOpenConnection(limited)).toBe(true);
			const first = await limited.getConnection();
			expect(mayOpenConnection(limited)).toBe(true);
			first.release();
			expect(mayOpenConnection(limited)).toBe(false);
			const again = await limited.getConnection();
			expect(coreOf(again).threadId).toBe(coreOf(first).threadId);
			expect(mayOpenConnection(limited)).toBe(true);
			again.release();
		});

		it("setNextConnectionSecrets: the pool's next new connection authenticates with them, a warm one stays", async () => {
			const rotating = pool({ connectionLimit: 2, password: "an-expired-token" });
			const denied = async () => {
				const { error } = await outcome(rotating.getConnection());
				return (error as { code?: string } | undefined)?.code;
			};
			expect(await denied()).toBe("ER_ACCESS_DENIED_ERROR");
			// password1 is mysql2's other name for the password; an empty password means "use the other one".
			expect(setNextConnectionSecrets(rotating, { password: "", password1: db.password })).toBe(true);
			const warm = await rotating.getConnection();
			const [rows] = await warm.query("SELECT CURRENT_USER() AS user");
			expect((rows as { user: string }[])[0]?.user).toBe(`${db.user}@%`);
			const warmThread = coreOf(warm).threadId;
			warm.release();
			// Rotated to a password the server refuses: the warm connection is reused as it is, a new one is refused.
			setNextConnectionSecrets(rotating, { password: "revoked" });
			const reused = await rotating.getConnection();
			expect(coreOf(reused).threadId).toBe(warmThread);
			expect(await denied()).toBe("ER_ACCESS_DENIED_ERROR");
			// And back: the pool's next new connection uses the password given now.
			setNextConnectionSecrets(rotating, { password: db.password });
			const fresh = await rotating.getConnection();
			expect(coreOf(fresh).threadId).not.toBe(warmThread);
			await fresh.query("SELECT 1");
			fresh.release();
			reused.release();
		});

		it("poolLimits: the pool's connectionLimit and idleTimeout as mysql2 resolved them", () => {
			expect(poolLimits(pool({ connectionLimit: 3, idleTimeout: 1234 }))).toMatchObject({
				connectionLimit: 3,
				idleTimeout: 1234,
			});
			expect(poolLimits(pool())).toMatchObject({ connectionLimit: 10, idleTimeout: 60_000 });
		});
	});

	describe("mysql2 behaviour the middleware relies on", () => {
		// Public behaviour rather than internals, but relied on just the same, and not there in every mysql2 3.x.
		it("connectTimeout bounds the whole handshake: a server that greets and then stalls fails the connect", async () => {
			// The middleware's connect error says so ("or the server never completed the handshake"), its connect
			// retry counts on it, and a pooled connect that never ends would hold one of the pool's slots for good.
			const stalling = await greetingThenSilence({ host: db.host, port: db.port });
			try {
				const core = mysqlCore.createConnection({
					...configOf(db),
					port: stalling.port,
					connectTimeout: 300,
				});
				opened.push(core);
				core.on("error", () => {});
				const connected = new Promise<unknown>((resolve) => core.connect((error) => resolve(error)));
				const error = await within(connected, 3000, "a connect whose handshake stalls after the greeting");
				expect(error).toMatchObject({ code: "ETIMEDOUT" });
				expect(stalling.greeted()).toBe(1);
			} finally {
				await stalling.close();
			}
		});

		it("knows every option the middleware itself passes to it (no warning on the console)", async () => {
			for (const mode of ["scoped", "pool"] as const) {
				const { driver } = await resolveConfig(configOf(db), mode);
				expect({ mode, ignored: optionsMysql2Ignores(driver) }).toEqual({ mode, ignored: [] });
			}
		});
	});

	describe("what mysql2 knows of its options", () => {
		it("optionsMysql2Ignores: returns a typo and not a known option, and keeps mysql2's warning off the console", () => {
			const consoleError = vi.spyOn(console, "error").mockImplementation(() => {});
			try {
				expect(
					optionsMysql2Ignores({ hots: "db", host: "db", connectTimeout: 1000, multipleStatements: true }),
				).toEqual(["hots"]);
				expect(optionsMysql2Ignores({ host: "db", dateStrings: true, charset: "utf8mb4" })).toEqual([]);
				expect(consoleError).not.toHaveBeenCalled();
			} finally {
				consoleError.mockRestore();
			}
		});

		it("optionsMysql2Ignores: other console output during the check still reaches the console", () => {
			const consoleError = vi.spyOn(console, "error").mockImplementation(() => {});
			try {
				// An invalid timezone is another mysql2 warning: it is not an unknown key.
				expect(optionsMysql2Ignores({ timezone: "not a timezone" })).toEqual([]);
				expect(consoleError).toHaveBeenCalledWith(expect.stringContaining("Ignoring invalid timezone"));
			} finally {
				consoleError.mockRestore();
			}
		});

		it("parseMysqlUrl: host, port, user, password, database and query parameters, decoded", () => {
			expect(
				parseMysqlUrl(
					"mysql://app%40svc:p%40ss%3Aw%2Fd@db.example.internal:3307/orders?multipleStatements=true&connectTimeout=1500&charset=utf8mb4",
				),
			).toEqual({
				host: "db.example.internal",
				port: 3307,
				user: "app@svc",
				password: "p@ss:w/d",
				database: "orders",
				multipleStatements: true,
				connectTimeout: 1500,
				charset: "utf8mb4",
			});
		});

		it("parseMysqlUrl: leaves out what the URL does not give", () => {
			expect(parseMysqlUrl("mysql://db.example.internal")).toEqual({ host: "db.example.internal" });
		});

		it("mysql2OptionNames: includes connection and pool options", () => {
			const names = mysql2OptionNames();
			for (const name of [
				"host",
				"port",
				"user",
				"password",
				"database",
				"connectTimeout",
				"multipleStatements",
				"connectionLimit",
				"idleTimeout",
				"charset",
				"uri",
			]) {
				expect(names).toContain(name);
			}
			expect(optionsMysql2Ignores(Object.fromEntries(names.map((name) => [name, undefined])))).toEqual([]);
		});
	});
});
