// Seed 003: a connection kept at module scope reads a stale snapshot and misses rows that another function has
// committed. The control reproduces it with plain mysql2; the same steps through the middleware, in both modes,
// see the committed row.
import middy from "@middy/core";
import { usePoolCleanup, useTestDatabase } from "@middy-conn/test-harness/test-fixtures";
import type { RowDataPacket } from "mysql2";
import mysql from "mysql2/promise";
import { describe, expect, it } from "vitest";
import { closeMysqlPools, type InvocationDb, mysqlConnection } from "../src/index.ts";
import { configOf, inMode, invoke, outcome, recordingLogger } from "./helpers.ts";

const { admin, db } = useTestDatabase("mysql_stale", {
	tables: ["orders (id INT AUTO_INCREMENT PRIMARY KEY, note VARCHAR(40))"],
	clear: ["orders"],
});
usePoolCleanup(closeMysqlPools);

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

	// The first invocation leaves a transaction open, in one of two ways, and crashes before COMMIT.
	const leftOpen = [
		{
			claim: "the next invocation sees the committed row",
			open: (db: InvocationDb) => db.beginTransaction(),
		},
		{
			// the seed's driver (pymysql) runs with autocommit off: the first SELECT opens a transaction that never ends
			claim: "a session left with autocommit off does not pin the next invocation to a snapshot",
			open: (db: InvocationDb) => db.query("SET autocommit = 0"),
		},
	];

	it.each((["scoped", "pool"] as const).flatMap((mode) => leftOpen.map((c) => ({ mode, ...c }))))(
		"mode $mode: $claim",
		async ({ mode, open }) => {
			const handler = middy<{ step: "first" | "second" }>()
				.use(
					mysqlConnection({
						// pool mode with a single connection: the second invocation gets the very same server connection
						...inMode(db, mode),
						logger: recordingLogger().logger,
					}),
				)
				.handler(async (event, context) => {
					if (event.step === "first") {
						await open(context.db);
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
