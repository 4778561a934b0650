// Type tests, checked by the root `tsc -p tsconfig.json --noEmit` (never run): `context.db` is typed in the
// handler with no casts, with mysql2's result types; misuse fails to compile.
import middy from "@middy/core";
import type { FieldPacket, ResultSetHeader, RowDataPacket } from "mysql2";
import type { Connection } from "mysql2/promise";
import {
	type InvocationDb,
	type MysqlConnectionStats,
	type MysqlContext,
	mysqlConnection,
} from "../src/index.ts";

const config = { host: "db.example.com", user: "app", password: "pw", database: "app" };

// `.use()` then `.handler()`: the handler's context has `db`, typed.
export const orders = middy<{ id: number }>()
	.use(mysqlConnection({ config }))
	.handler(async (event, context) => {
		const [rows, fields] = await context.db.query<RowDataPacket[]>("SELECT * FROM orders WHERE id = ?", [
			event.id,
		]);
		const first: RowDataPacket | undefined = rows[0];
		const columns: FieldPacket[] = fields;
		const [header] = await context.db.execute<ResultSetHeader>("INSERT INTO orders (note) VALUES (?)", ["x"]);
		const insertId: number = header.insertId;
		await context.db.beginTransaction();
		await context.db.commit();
		await context.db.rollback();
		const raw: Connection = await context.db.connection();
		// @ts-expect-error: not a method of context.db
		await context.db.qeury("SELECT 1");
		// @ts-expect-error: rows of a SELECT are not a ResultSetHeader
		const wrong: ResultSetHeader = rows;
		// @ts-expect-error: context.db is the invocation's, it cannot be replaced by a string
		context.db = "another";
		// @ts-expect-error: context.db is typed, never any
		const notANumber: number = context.db;
		return { first, columns, insertId, raw, wrong, notANumber };
	});

// A handler written on its own takes a MysqlContext (the Lambda context included), and is given to .handler()
// after .use(): .handler() checks that the chain provides what the handler needs.
const findOrder = async (event: { id: number }, context: MysqlContext) => {
	const requestId: string = context.awsRequestId;
	const [rows] = await context.db.query<RowDataPacket[]>("SELECT * FROM orders WHERE id = ?", [event.id]);
	return { requestId, rows };
};
export const checked = middy<{ id: number }>().use(mysqlConnection({ config })).handler(findOrder);
// @ts-expect-error: the chain has no mysqlConnection(): nothing provides context.db
export const checkedWithout = middy<{ id: number }>().handler(findOrder);
export const checkedOtherKey = middy<{ id: number }>()
	.use(mysqlConnection({ config, contextKey: "billing" }))
	// @ts-expect-error: the handler needs context.db; the chain puts the connection under "billing"
	.handler(findOrder);
const chargeInvoice = async (_event: unknown, context: MysqlContext<"billing">) =>
	context.billing.execute("UPDATE invoices SET paid = 1");
export const checkedKey = middy()
	.use(mysqlConnection({ config, contextKey: "billing" }))
	.handler(chargeInvoice);

// middy(handler).use(...) runs the same, but TypeScript cannot check it: Middy's types give middy(handler) the
// handler's own context before any .use(), so this compiles without the middleware (and fails at run time).
// The READMEs teach the checked form above for that reason.
export const unchecked = middy(findOrder);

// contextKey renames the key, in the types too.
export const renamed = middy()
	.use(mysqlConnection({ config, contextKey: "billing" }))
	.handler(async (_event, context) => {
		const db: InvocationDb = context.billing;
		// @ts-expect-error: the default key is not there when the key is renamed
		await context.db.query("SELECT 1");
		return db;
	});

// A config function gets the Middy request and may be async.
mysqlConnection({
	config: async (request) => ({ ...config, password: String(request.context.awsRequestId) }),
	mode: "pool",
	transaction: { isolationLevel: "READ COMMITTED" },
	onStats: (stats: MysqlConnectionStats) => {
		const outcome: "committed" | "rolled-back" | "none" = stats.transaction;
		return outcome;
	},
});
mysqlConnection({ config: { ...config, ssl: "rds", connectionLimit: 2 }, mode: "pool" });

// @ts-expect-error: config is required
mysqlConnection({});
// @ts-expect-error: the modes are "scoped" and "pool"
mysqlConnection({ config, mode: "cluster" });
// @ts-expect-error: isolation levels are spelt as in SQL
mysqlConnection({ config, transaction: { isolationLevel: "READ-COMMITTED" } });
// @ts-expect-error: a port is a number
mysqlConnection({ config: { ...config, port: "3306" } });
// @ts-expect-error: "rds" is the only TLS shorthand (mysql2's profile names are deprecated)
mysqlConnection({ config: { ...config, ssl: "Amazon RDS" } });
// @ts-expect-error: the middleware resets connections itself
mysqlConnection({ config: { ...config, resetOnRelease: true }, mode: "pool" });
// @ts-expect-error: unknown option
mysqlConnection({ config, poolSize: 2 });
