// The `transaction` option: one transaction per invocation, begun before the first statement, committed when the
// invocation succeeds, committed on an early response too (a middleware answered), rolled back on error and on timeout. And the handler's own
// transactions: one left open by a throwing invocation never reaches the next invocation.
import middy from "@middy/core";
import { usePoolCleanup, useTestDatabase } from "@middy-conn/test-harness/test-fixtures";
import type { ResultSetHeader, RowDataPacket } from "mysql2";
import { describe, expect, it } from "vitest";
import {
	closeMysqlPools,
	type MysqlConnectionOptions,
	type MysqlConnectionStats,
	mysqlConnection,
} from "../src/index.ts";
import { configOf, inMode, invoke, outcome, recordingLogger } from "./helpers.ts";

const { admin, db } = useTestDatabase("mysql_tx", {
	tables: ["items (id INT AUTO_INCREMENT PRIMARY KEY, label VARCHAR(40))"],
	clear: ["items"],
	settle: "wait",
});
usePoolCleanup(closeMysqlPools);

const committedLabels = async () =>
	(await admin.query<RowDataPacket[]>(`SELECT label FROM \`${db.database}\`.items ORDER BY id`)).map(
		(row) => row.label,
	);

const modes = ["scoped", "pool"] as const;

describe.each(modes)("mode %s: the transaction option", (mode) => {
	const middleware = (extra: Partial<MysqlConnectionOptions> = {}, stats: MysqlConnectionStats[] = []) =>
		mysqlConnection({
			...inMode(db, mode),
			transaction: true,
			logger: recordingLogger().logger,
			onStats: (s) => void stats.push(s),
			...extra,
		});

	it("commits when the invocation succeeds", async () => {
		const stats: MysqlConnectionStats[] = [];
		const handler = middy()
			.use(middleware({}, stats))
			.handler(async (_event, context) => {
				await context.db.query("INSERT INTO items (label) VALUES (?)", ["a"]);
				await context.db.execute("INSERT INTO items (label) VALUES (?)", ["b"]);
				const [rows] = await context.db.query<RowDataPacket[]>("SELECT @@in_transaction AS t");
				return rows[0]?.t;
			});
		expect(await invoke(handler)).toBe(1);
		expect(await committedLabels()).toEqual(["a", "b"]);
		expect(stats[0]).toMatchObject({ transaction: "committed", queries: 3 });
	});

	it("rolls back when the handler throws", async () => {
		const stats: MysqlConnectionStats[] = [];
		const handler = middy()
			.use(middleware({}, stats))
			.handler(async (_event, context) => {
				await context.db.query("INSERT INTO items (label) VALUES (?)", ["lost"]);
				throw new Error("handler failed");
			});
		expect((await outcome(invoke(handler))).error).toBeInstanceOf(Error);
		expect(await committedLabels()).toEqual([]);
		expect(stats[0]?.transaction).toBe("rolled-back");
	});

	it("commits on an early response from a later before: a middleware answered, and what ran before it ran to its end", async () => {
		const handler = middy()
			.use(middleware())
			.use({
				before: async (request) => {
					const { db: tx } = request.context as unknown as { db: { query(sql: string): Promise<unknown> } };
					await tx.query("INSERT INTO items (label) VALUES ('early')");
					return { statusCode: 409 };
				},
			})
			.handler(async () => ({ statusCode: 200 }));
		expect(await invoke(handler)).toEqual({ statusCode: 409 });
		expect(await committedLabels()).toEqual(["early"]);
	});

	it("rolls back on Middy's early timeout", async () => {
		const handler = middy()
			.use(middleware())
			.handler(async (_event, context) => {
				await context.db.query("INSERT INTO items (label) VALUES ('timed out')");
				await context.db.query("SELECT SLEEP(5)").catch(() => {});
			});
		expect(((await outcome(invoke(handler, {}, { timeoutMs: 300 }))).error as Error).name).toBe(
			"TimeoutError",
		);
		// the server rolls back when it sees the destroyed connection go
		await admin.settleConnections(db.user, 0, 10_000);
		expect(await committedLabels()).toEqual([]);
	});

	it("keeps statements run in parallel with Promise.all inside the one transaction", async () => {
		const handler = middy<{ fail: boolean }>()
			.use(middleware())
			.handler(async (event, context) => {
				const results = await Promise.all([
					...["p1", "p2", "p3", "p4", "p5"].map((label) =>
						context.db.query<ResultSetHeader>("INSERT INTO items (label) VALUES (?)", [label]),
					),
					context.db.query<RowDataPacket[]>("SELECT @@in_transaction AS t, CONNECTION_ID() AS id"),
				]);
				const [probe] = results.at(-1) as [RowDataPacket[], unknown];
				if (event.fail) throw new Error("after the parallel inserts");
				return probe[0]?.t;
			});
		expect((await outcome(invoke(handler, { fail: true }))).error).toBeInstanceOf(Error);
		expect(await committedLabels()).toEqual([]);
		expect(await invoke(handler, { fail: false })).toBe(1);
		expect((await committedLabels()).sort()).toEqual(["p1", "p2", "p3", "p4", "p5"]);
	});

	it("sets the isolation level asked for, for the invocation's transaction only", async () => {
		let release: () => void = () => {};
		let reading: () => void = () => {};
		const firstReadDone = new Promise<void>((resolve) => {
			reading = resolve;
		});
		const handler = middy()
			.use(middleware({ transaction: { isolationLevel: "READ COMMITTED" } }))
			.handler(async (_event, context) => {
				const count = async () =>
					Number((await context.db.query<RowDataPacket[]>("SELECT COUNT(*) AS n FROM items"))[0][0]?.n);
				const before = await count();
				reading();
				await new Promise<void>((resolve) => {
					release = resolve;
				});
				return [before, await count()];
			});
		const running = invoke<number[]>(handler);
		await firstReadDone;
		await admin.query(`INSERT INTO \`${db.database}\`.items (label) VALUES ('concurrent')`);
		release();
		// READ COMMITTED: the second read sees the row committed in between (REPEATABLE READ would not)
		expect(await running).toEqual([0, 1]);
	});

	it("fails the invocation with a clear error when the connection dies before COMMIT", async () => {
		const handler = middy()
			.use(middleware())
			// runs before mysqlConnection's after: the connection is killed between the handler and COMMIT
			.after(async (request) => {
				await admin.kill(Number(request.response));
				await admin.settleConnections(db.user, 0);
			})
			.handler(async (_event, context) => {
				await context.db.query("INSERT INTO items (label) VALUES ('never committed')");
				const [rows] = await context.db.query<RowDataPacket[]>("SELECT CONNECTION_ID() AS id");
				return Number(rows[0]?.id);
			});
		const { error } = await outcome(invoke(handler));
		expect((error as Error).message).toMatch(/COMMIT of the invocation's transaction/);
		expect(await committedLabels()).toEqual([]);
	});

	it("refuses beginTransaction(), since the middleware manages the transaction", async () => {
		const handler = middy()
			.use(middleware())
			.handler(async (_event, context) => context.db.beginTransaction());
		const { error } = await outcome(invoke(handler));
		expect((error as { code?: string }).code).toBe("MIDDY_CONN_MYSQL_TRANSACTION_MANAGED");
	});

	it("lets the handler end the transaction early; the next statement begins another, committed at the end", async () => {
		const handler = middy()
			.use(middleware())
			.handler(async (_event, context) => {
				await context.db.query("INSERT INTO items (label) VALUES ('discarded')");
				await context.db.rollback();
				await context.db.query("INSERT INTO items (label) VALUES ('kept')");
			});
		await invoke(handler);
		expect(await committedLabels()).toEqual(["kept"]);
	});

	it("opens no transaction, and no connection, when the invocation runs no statement", async () => {
		const stats: MysqlConnectionStats[] = [];
		const handler = middy()
			.use(middleware({}, stats))
			.handler(async (_event, context) => {
				await context.db.commit();
				return "nothing to do";
			});
		expect(await invoke(handler)).toBe("nothing to do");
		expect(stats[0]).toMatchObject({ connected: false, transaction: "none", closed: "none" });
	});
});

describe.each(modes)("mode %s: a transaction the handler leaves open", (mode) => {
	it("does not survive into the next invocation, and its writes are never committed", async () => {
		const { logger, lines } = recordingLogger();
		const handler = middy<{ step: "crash" | "next" }>()
			.use(
				mysqlConnection({
					// pool mode with one connection: the next invocation gets the same server session back
					...inMode(db, mode),
					logger,
				}),
			)
			.handler(async (event, context) => {
				const [[who]] = await context.db.query<RowDataPacket[]>(
					"SELECT CONNECTION_ID() AS id, @@in_transaction AS t",
				);
				if (event.step === "crash") {
					await context.db.beginTransaction();
					await context.db.query("INSERT INTO items (label) VALUES ('from the crashed invocation')");
					throw new Error("crashed between BEGIN and COMMIT");
				}
				// serverless-mysql's failure: here the next invocation inherits the open transaction, and its COMMIT
				// commits the crashed invocation's writes with its own
				await context.db.beginTransaction();
				await context.db.query("INSERT INTO items (label) VALUES ('from the next invocation')");
				await context.db.commit();
				return who;
			});
		const crashed = await outcome(invoke(handler, { step: "crash" }));
		expect((crashed.error as Error).message).toBe("crashed between BEGIN and COMMIT");
		const next = await invoke<{ id: number; t: number }>(handler, { step: "next" });
		expect(next.t).toBe(0);
		expect(await committedLabels()).toEqual(["from the next invocation"]);
		expect(lines.filter((line) => line.level !== "info")).toEqual([]);
	});

	it("is rolled back, with a warning, when the invocation succeeds without committing it", async () => {
		const { logger, lines } = recordingLogger();
		const handler = middy()
			.use(mysqlConnection({ config: configOf(db), mode, logger }))
			.handler(async (_event, context) => {
				await context.db.beginTransaction();
				await context.db.query("INSERT INTO items (label) VALUES ('forgotten')");
				return "forgot to commit";
			});
		expect(await invoke(handler)).toBe("forgot to commit");
		expect(await committedLabels()).toEqual([]);
		expect(lines.some((line) => line.level === "warn" && /still open/.test(line.message))).toBe(true);
	});
});
