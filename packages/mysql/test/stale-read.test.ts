// Seed 003: a connection kept at module scope reads a stale snapshot and misses rows that another function has
// committed. The control reproduces it with plain mysql2; the same steps through the middleware, in both modes,
// see the committed row.
import middy from "@middy/core";
import { MysqlAdmin, type TestDatabase } from "@middy-conn/test-harness";
import type { RowDataPacket } from "mysql2";
import mysql from "mysql2/promise";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { closeMysqlPools, type InvocationDb, mysqlConnection } from "../src/index.ts";
import { configOf, invoke, outcome, recordingLogger } from "./helpers.ts";

let admin: MysqlAdmin;
let db: TestDatabase;

beforeAll(async () => {
	admin = await MysqlAdmin.connect();
	db = await admin.createDatabase("mysql_stale");
	await admin.query(
		`CREATE TABLE \`${db.database}\`.orders (id INT AUTO_INCREMENT PRIMARY KEY, note VARCHAR(40))`,
	);
});

afterEach(async () => {
	await closeMysqlPools();
	await admin.query(`DELETE FROM \`${db.database}\`.orders`);
});

afterAll(async () => {
	await admin.dropDatabase(db);
	await admin.close();
});

/** Another function commits an order (autocommit), on its own connection. */
const commitOrderElsewhere = (note: string) =>
	admin.query(`INSERT INTO \`${db.database}\`.orders (note) VALUES (?)`, [note]);

const countOrders = async (query: InvocationDb["query"]) => {
	const [rows] = await query<RowDataPacket[]>("SELECT COUNT(*) AS n FROM orders");
	return Number(rows[0]?.n);
};

// The steps, whatever holds the connection: an invocation begins a transaction, reads, and throws before it
// commits; another function commits a row; the next invocation counts the rows.
const steps = async (first: () => Promise<unknown>, second: () => Promise<number>) => {
	const failed = await outcome(first());
	expect((failed.error as Error).message).toBe("crashed before COMMIT");
	await commitOrderElsewhere("committed by another function");
	return second();
};

describe("the stale read of seed 003", () => {
	it("control: a module-level connection misses a row another connection committed", async () => {
		// what the seed's handler does: one connection for the life of the execution environment
		const moduleConnection = await mysql.createConnection({ ...configOf(db) } as mysql.ConnectionOptions);
		try {
			const handler = middy<{ step: "first" | "second" }>().handler(async (event) => {
				if (event.step === "first") {
					await moduleConnection.beginTransaction();
					await countOrders(moduleConnection.query.bind(moduleConnection) as InvocationDb["query"]);
					throw new Error("crashed before COMMIT");
				}
				return countOrders(moduleConnection.query.bind(moduleConnection) as InvocationDb["query"]);
			});
			const seen = await steps(
				() => invoke(handler, { step: "first" }),
				() => invoke<number>(handler, { step: "second" }),
			);
			expect(
				await admin.query<RowDataPacket[]>(`SELECT COUNT(*) AS n FROM \`${db.database}\`.orders`),
			).toEqual([{ n: 1 }]);
			// the REPEATABLE READ snapshot of the transaction the first invocation left open: the row is not there
			expect(seen).toBe(0);
		} finally {
			moduleConnection.destroy();
		}
	});

	it.each(["scoped", "pool"] as const)(
		"mode %s: the next invocation sees the committed row",
		async (mode) => {
			const handler = middy<{ step: "first" | "second" }>()
				.use(
					mysqlConnection({
						// pool mode with a single connection: the second invocation gets the very same server connection
						config: { ...configOf(db), ...(mode === "pool" ? { connectionLimit: 1 } : {}) },
						mode,
						logger: recordingLogger().logger,
					}),
				)
				.handler(async (event, context) => {
					if (event.step === "first") {
						await context.db.beginTransaction();
						await countOrders(context.db.query);
						throw new Error("crashed before COMMIT");
					}
					return countOrders(context.db.query);
				});
			const seen = await steps(
				() => invoke(handler, { step: "first" }),
				() => invoke<number>(handler, { step: "second" }),
			);
			expect(seen).toBe(1);
		},
	);

	it.each(["scoped", "pool"] as const)(
		"mode %s: a session left with autocommit off does not pin the next invocation to a snapshot",
		async (mode) => {
			// the seed's driver (pymysql) runs with autocommit off: the first SELECT opens a transaction that never ends
			const handler = middy<{ step: "first" | "second" }>()
				.use(
					mysqlConnection({
						config: { ...configOf(db), ...(mode === "pool" ? { connectionLimit: 1 } : {}) },
						mode,
					}),
				)
				.handler(async (event, context) => {
					if (event.step === "first") {
						await context.db.query("SET autocommit = 0");
						await countOrders(context.db.query);
						throw new Error("crashed before COMMIT");
					}
					return countOrders(context.db.query);
				});
			const seen = await steps(
				() => invoke(handler, { step: "first" }),
				() => invoke<number>(handler, { step: "second" }),
			);
			expect(seen).toBe(1);
		},
	);
});
