// Connection failures give clear errors: the problem, the target (host:port and user), mysql2's `code` kept, the
// driver's error as `cause`; and never a password or a token, anywhere an error or a log line can carry it.
import { createServer, type Server, type Socket } from "node:net";
import { inspect } from "node:util";
import middy from "@middy/core";
import { usePoolCleanup, useTestDatabase } from "@middy-conn/test-harness/test-fixtures";
import mysql from "mysql2/promise";
import { describe, expect, it } from "vitest";
import {
	closeMysqlPools,
	type MysqlConfigOption,
	type MysqlConnectionStats,
	mysqlConnection,
} from "../src/index.ts";
import { configOf, invoke, outcome, recordingLogger } from "./helpers.ts";

const { admin, db } = useTestDatabase("mysql_errors");
usePoolCleanup(closeMysqlPools);

/** Listens on a loopback port and accepts TCP connections, but never sends a byte: a handshake that hangs. */
const silentServer = async (): Promise<{ port: number; close(): Promise<void> }> => {
	const sockets = new Set<Socket>();
	const server: Server = createServer((socket) => {
		sockets.add(socket);
		socket.on("error", () => {});
	});
	await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
	const address = server.address();
	if (!address || typeof address === "string") throw new Error("no port");
	return {
		port: address.port,
		close: () =>
			new Promise((resolve) => {
				for (const socket of sockets) socket.destroy();
				server.close(() => resolve());
			}),
	};
};

/** A loopback port nothing listens on. */
const closedPort = async (): Promise<number> => {
	const server = await silentServer();
	await server.close();
	return server.port;
};

/** Every place an error's text can end up: message, stack, JSON, inspect, the whole cause chain. */
const everywhere = (error: unknown): string => {
	const parts: string[] = [inspect(error, { depth: 10, showHidden: true })];
	let current: unknown = error;
	for (let depth = 0; current && depth < 10; depth++) {
		const record = current as { message?: unknown; stack?: unknown; cause?: unknown };
		parts.push(String(current), String(record.message), String(record.stack), JSON.stringify(current) ?? "");
		current = record.cause;
	}
	return parts.join("\n");
};

const failing = (config: MysqlConfigOption, mode: "scoped" | "pool") => {
	const { logger, lines } = recordingLogger();
	const stats: MysqlConnectionStats[] = [];
	const handler = middy()
		.use(mysqlConnection({ config, mode, logger, logStats: true, onStats: (s) => void stats.push(s) }))
		.handler(async (_event, context) => {
			await context.db.query("SELECT 1");
			return "unreachable";
		});
	return { handler, lines, stats };
};

describe.each(["scoped", "pool"] as const)("mode %s: connection failures", (mode) => {
	it("a port that accepts TCP but never answers fails at connectTimeout with ETIMEDOUT", async () => {
		const server = await silentServer();
		try {
			const { handler, stats } = failing(
				{ host: "127.0.0.1", port: server.port, user: "app", password: "x-secret", connectTimeout: 300 },
				mode,
			);
			const { error } = await outcome(invoke(handler));
			expect(error).toMatchObject({
				name: "MiddyConnError",
				code: "ETIMEDOUT",
				host: "127.0.0.1",
				port: server.port,
			});
			expect((error as Error).message).toContain(`127.0.0.1:${server.port}`);
			expect((error as Error).message).toMatch(/timed out after 300 ms/);
			expect((error as Error).cause).toMatchObject({ code: "ETIMEDOUT" });
			expect(stats[0]).toMatchObject({ connected: false });
		} finally {
			await server.close();
		}
	});

	it("a closed port fails with ECONNREFUSED", async () => {
		const port = await closedPort();
		const { handler } = failing({ host: "127.0.0.1", port, user: "app", password: "x-secret" }, mode);
		const { error } = await outcome(invoke(handler));
		expect(error).toMatchObject({ code: "ECONNREFUSED" });
		expect((error as Error).message).toContain(`refused the connection at 127.0.0.1:${port}`);
	});

	it("a wrong password fails with ER_ACCESS_DENIED_ERROR and the password appears nowhere", async () => {
		const password = `wrong-${db.password}-Secret!`;
		const { handler, lines, stats } = failing({ ...configOf(db), password }, mode);
		const { error } = await outcome(invoke(handler));
		expect(error).toMatchObject({ code: "ER_ACCESS_DENIED_ERROR", user: db.user });
		expect((error as Error).message).toContain(`'${db.user}'`);
		expect((error as Error).message).toContain(`${db.host}:${db.port}`);
		expect(everywhere(error)).not.toContain(password);
		expect(everywhere(error)).not.toContain(encodeURIComponent(password));
		expect(JSON.stringify(lines)).not.toContain(password);
		expect(JSON.stringify(stats)).not.toContain(password);
	});

	it("a password given in a mysql:// URI appears nowhere either", async () => {
		const password = `wrong/${db.password}@#`;
		const uri = `mysql://${db.user}:${encodeURIComponent(password)}@${db.host}:${db.port}/${db.database}`;
		const { handler } = failing({ uri }, mode);
		const { error } = await outcome(invoke(handler));
		expect(error).toMatchObject({ code: "ER_ACCESS_DENIED_ERROR" });
		expect(everywhere(error)).not.toContain(password);
		expect(everywhere(error)).not.toContain(encodeURIComponent(password));
	});

	it("an IAM-style token from a config function appears nowhere", async () => {
		const token = `${db.host}:${db.port}/?Action=connect&DBUser=${db.user}&X-Amz-Signature=0123456789abcdef`;
		const { handler } = failing(async () => ({ ...configOf(db), password: token }), mode);
		const { error } = await outcome(invoke(handler));
		expect(error).toMatchObject({ code: "ER_ACCESS_DENIED_ERROR" });
		expect(everywhere(error)).not.toContain(token);
		expect(everywhere(error)).not.toContain("X-Amz-Signature=0123456789abcdef");
	});

	it("too many connections for the user fails with the server's code", async () => {
		const limited = await admin.createDatabase("mysql_limited");
		await admin.query(`ALTER USER '${limited.user}'@'%' WITH MAX_USER_CONNECTIONS 1`);
		const holder = await mysql.createConnection(configOf(limited) as mysql.ConnectionOptions);
		try {
			const { handler } = failing(configOf(limited), mode);
			const { error } = await outcome(invoke(handler));
			// MySQL and MariaDB both answer an account's MAX_USER_CONNECTIONS with ER_USER_LIMIT_REACHED;
			// ER_TOO_MANY_USER_CONNECTIONS comes from the global max_user_connections (server-full.test.ts)
			expect(["ER_USER_LIMIT_REACHED", "ER_TOO_MANY_USER_CONNECTIONS"]).toContain(
				(error as { code: string }).code,
			);
			expect((error as Error).message).toMatch(/connection limit is reached/);
		} finally {
			holder.destroy();
			await closeMysqlPools();
			await admin.dropDatabase(limited);
		}
	});
});

describe("errors of the SQL itself", () => {
	it("pass through untouched, and the connection stays usable in the invocation", async () => {
		const handler = middy()
			.use(mysqlConnection({ config: configOf(db) }))
			.handler(async (_event, context) => {
				const failed = await outcome(context.db.query("SELECT * FROM no_such_table"));
				const [rows] = await context.db.query<mysql.RowDataPacket[]>("SELECT 1 AS one");
				return { error: failed.error, one: rows[0]?.one };
			});
		const result = await invoke<{ error: { code: string; name: string }; one: number }>(handler);
		expect(result.error.code).toBe("ER_NO_SUCH_TABLE");
		expect(result.error.name).not.toBe("MiddyConnError");
		expect(result.one).toBe(1);
	});

	it("a config function that returns an invalid config fails with a TypeError naming the field", async () => {
		const handler = middy()
			.use(mysqlConnection({ config: () => ({ ...configOf(db), port: 70_000 }) }))
			.handler(async (_event, context) => context.db.query("SELECT 1"));
		const { error } = await outcome(invoke(handler));
		expect(error).toBeInstanceOf(TypeError);
		expect((error as Error).message).toBe("Option 'config().port' must be <= 65535");
	});
});
