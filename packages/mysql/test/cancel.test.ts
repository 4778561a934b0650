// Stopping a statement on the server (src/cancel.ts): a KILL over a side connection, only of a session that still
// runs the statement that was given up on. Against the real server.
import { useTestDatabase } from "@middy-conn/test-harness/test-fixtures";
import mysql from "mysql2/promise";
import { describe, expect, it } from "vitest";
import { killSession, runsStatement } from "../src/cancel.ts";
import { resolveConfig } from "../src/options.ts";
import { configOf, recordingLogger } from "./helpers.ts";

const { admin, db } = useTestDatabase("mysql_cancel");

/** A session of the test user running `sql`, and its server id. */
const running = async (sql: string) => {
	const connection = await mysql.createConnection(configOf(db));
	const [rows] = await connection.query("SELECT CONNECTION_ID() AS id");
	const id = Number((rows as { id: number }[])[0]?.id);
	const statement = connection.query(sql).catch((error: unknown) => error);
	// the statement has reached the server
	for (let i = 0; i < 100 && !(await admin.processlist(db.user)).some((p) => p.id === id && p.info); i++) {
		await new Promise((resolve) => setTimeout(resolve, 10));
	}
	return { id, statement, close: () => connection.destroy() };
};

describe("runsStatement: the session's statement is the one sent, up to its first placeholder", () => {
	it.each([
		["SELECT SLEEP(5)", "SELECT SLEEP(5)", true],
		["UPDATE t SET v = v + 1 WHERE id = 7", "UPDATE t SET v = v + 1 WHERE id = ?", true],
		["SELECT SLEEP(5)", "SELECT SLEEP(3)", false],
		["/* another client */ SELECT 1", "SELECT 1", false],
	])("%s, sent as %s: %s", (info, sent, expected) => {
		expect(runsStatement(info, sent)).toBe(expected);
	});
});

describe("killSession", () => {
	it("kills a session that runs the statement given up on: the session is gone", async () => {
		const session = await running("SELECT SLEEP(5)");
		try {
			const { logger, lines } = recordingLogger();
			const resolved = await resolveConfig(configOf(db), "scoped");
			expect(await killSession(resolved, session.id, "SELECT SLEEP(5)", 2000, logger)).toBe(true);
			expect(lines).toEqual([]);
			expect(await session.statement).toMatchObject({ code: expect.stringMatching(/KILLED|LOST/) });
		} finally {
			session.close();
		}
	});

	it("leaves alone a session that runs another statement (a proxy may have moved the connection), and says so", async () => {
		const session = await running("SELECT SLEEP(2)");
		try {
			const { logger, lines } = recordingLogger();
			const resolved = await resolveConfig(configOf(db), "scoped");
			expect(await killSession(resolved, session.id, "SELECT SLEEP(5)", 2000, logger)).toBe(false);
			expect(lines.map((line) => line.message)).toEqual([
				expect.stringMatching(/runs another statement.*not killed/),
			]);
			// still running
			expect((await admin.processlist(db.user)).find((p) => p.id === session.id)?.info).toBe(
				"SELECT SLEEP(2)",
			);
		} finally {
			session.close();
		}
	});

	it("does nothing to a session that runs no statement", async () => {
		const connection = await mysql.createConnection(configOf(db));
		try {
			const [rows] = await connection.query("SELECT CONNECTION_ID() AS id");
			const id = Number((rows as { id: number }[])[0]?.id);
			const resolved = await resolveConfig(configOf(db), "scoped");
			expect(await killSession(resolved, id, "SELECT SLEEP(5)", 2000, recordingLogger().logger)).toBe(true);
			// the idle session is still there and usable
			expect(await connection.query("SELECT 1 AS one")).toBeDefined();
		} finally {
			connection.destroy();
		}
	});
});
