// Loads an example's schema.sql into a test database, statement by statement: the app's connections never enable
// `multipleStatements`, and neither does this.
import { readFileSync } from "node:fs";
import mysql from "mysql2/promise";
import type { MysqlAdmin, TestDatabase } from "./mysql-admin.ts";

/** The statements of a SQL file: `--` comments dropped, split on the `;` that ends a line. */
export const sqlStatements = (sql: string): string[] =>
	sql
		.split("\n")
		.filter((line) => !line.trim().startsWith("--"))
		.join("\n")
		.split(/;\s*$/m)
		.map((statement) => statement.trim())
		.filter(Boolean);

/** Runs every statement of `file` in `db`, as its own user. */
export const applySqlFile = async (db: TestDatabase, file: string): Promise<void> => {
	const connection = await mysql.createConnection({
		host: db.host,
		port: db.port,
		user: db.user,
		password: db.password,
		database: db.database,
	});
	try {
		for (const statement of sqlStatements(readFileSync(file, "utf8"))) await connection.query(statement);
	} finally {
		await connection.end();
	}
};

/**
 * A second user on `db`'s database with only the given privileges (say SELECT for a reader function): least
 * privilege, and a user of its own whose connections the server counts apart from the writer's.
 */
export const createDatabaseUser = async (
	admin: MysqlAdmin,
	db: TestDatabase,
	options: { suffix: string; privileges: Array<"SELECT" | "INSERT" | "UPDATE" | "DELETE"> },
): Promise<TestDatabase> => {
	if (!/^[a-z0-9_]{1,8}$/.test(options.suffix)) throw new Error(`bad user suffix ${options.suffix}`);
	const user = `${db.user.slice(0, 31 - options.suffix.length)}_${options.suffix}`;
	const password = `pw-${crypto.randomUUID()}`;
	await admin.query(`CREATE USER '${user}'@'%' IDENTIFIED BY ?`, [password]);
	await admin.query(`GRANT ${options.privileges.join(", ")} ON \`${db.database}\`.* TO '${user}'@'%'`);
	return {
		...db,
		user,
		password,
		url: `mysql://${user}:${encodeURIComponent(password)}@${db.host}:${db.port}/${db.database}`,
	};
};
