import mysql from "mysql2/promise";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MysqlAdmin, type TestDatabase } from "../src/index.ts";

describe("the throwaway MySQL server", () => {
	let admin: MysqlAdmin;
	let db: TestDatabase;

	beforeAll(async () => {
		admin = await MysqlAdmin.connect();
		db = await admin.createDatabase("harness");
	});
	afterAll(async () => {
		await admin.dropDatabase(db);
		await admin.close();
	});

	it("is a real server that answers SELECT VERSION() to a user with a password", async () => {
		const connection = await mysql.createConnection(db.url);
		const [rows] = await connection.query<mysql.RowDataPacket[]>(
			"SELECT VERSION() AS version, DATABASE() AS db",
		);
		expect(String(rows[0]?.version)).toMatch(/^\d+\.\d+\.\d+/);
		expect(rows[0]?.db).toBe(db.database);
		await connection.end();
	});

	it("rejects a wrong password", async () => {
		await expect(
			mysql.createConnection({ host: db.host, port: db.port, user: db.user, password: "wrong" }),
		).rejects.toMatchObject({
			code: "ER_ACCESS_DENIED_ERROR",
		});
	});

	it("counts a user's connections, and the count falls back when they close", async () => {
		expect(await admin.connectionsOf(db.user)).toBe(0);
		const a = await mysql.createConnection(db.url);
		const b = await mysql.createConnection(db.url);
		expect(await admin.connectionsOf(db.user)).toBe(2);
		expect(await admin.threadsConnected()).toBeGreaterThanOrEqual(3);
		await a.end();
		await b.end();
		expect(await admin.settleConnections(db.user, 0)).toBe(0);
	});

	it("counts every connection attempt in Connections", async () => {
		const before = await admin.connectionsTotal();
		const connection = await mysql.createConnection(db.url);
		await connection.end();
		expect(await admin.connectionsTotal()).toBeGreaterThan(before);
	});

	it("KILLs a connection from another session, and the victim sees the error", async () => {
		const victim = await mysql.createConnection(db.url);
		const errors: unknown[] = [];
		victim.on("error", (error) => errors.push(error));
		const [[row]] = await victim.query<mysql.RowDataPacket[]>("SELECT CONNECTION_ID() AS id");
		// A query in flight when the KILL lands: the victim learns from the server, not from a closed-state check.
		const running = victim.query("SELECT SLEEP(10)").then(
			() => undefined,
			(error: unknown) => error,
		);
		await expect
			.poll(async () => (await admin.processlist(db.user)).some((p) => p.info?.includes("SLEEP")))
			.toBe(true);
		await admin.kill(Number(row?.id));
		expect(await running).toMatchObject({
			code: expect.stringMatching(/PROTOCOL_CONNECTION_LOST|ER_CONNECTION_KILLED|ECONNRESET/),
		});
		await expect(victim.query("SELECT 1")).rejects.toThrow(/closed state/);
		expect(await admin.settleConnections(db.user, 0)).toBe(0);
	});

	it("sets a server variable", async () => {
		const before = await admin.getGlobal("wait_timeout");
		await admin.setGlobal("wait_timeout", 1234);
		expect(await admin.getGlobal("wait_timeout")).toBe("1234");
		await admin.setGlobal("wait_timeout", Number(before));
	});
});
