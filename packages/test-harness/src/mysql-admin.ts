// Administrative access to the test server: an isolated database and user per test file, and the server-side
// counters that tests assert on (they count what the server saw, not what the client believes).
import { randomBytes } from "node:crypto";
import mysql from "mysql2/promise";

export interface TestDatabase {
	host: string;
	port: number;
	user: string;
	password: string;
	database: string;
	/** mysql://user:password@host:port/database */
	url: string;
}

/** The examples' database settings (DB_HOST, DB_PORT, DB_USER, DB_PASSWORD, DB_NAME: see their template.yaml). */
export const databaseEnvironment = (db: TestDatabase): Record<string, string> => ({
	DB_HOST: db.host,
	DB_PORT: String(db.port),
	DB_USER: db.user,
	DB_PASSWORD: db.password,
	DB_NAME: db.database,
});

export interface ProcessInfo {
	id: number;
	user: string;
	db: string | null;
	command: string;
	time: number;
	state: string | null;
	info: string | null;
}

/** The admin URL of the run's shared server, set by the vitest global setup (or by the demo and bench). */
export const mysqlAdminUrl = (): string => {
	const url = process.env.MIDDY_CONN_MYSQL_ADMIN_URL;
	if (!url) {
		throw new Error(
			"MIDDY_CONN_MYSQL_ADMIN_URL is not set: run tests through vitest (its global setup starts the server) or call startMysqlServer() first",
		);
	}
	return url;
};

const identifier = /^[a-z0-9_]+$/;

export class MysqlAdmin {
	readonly #connection: mysql.Connection;
	readonly host: string;
	readonly port: number;

	private constructor(connection: mysql.Connection, url: URL) {
		this.#connection = connection;
		this.host = url.hostname;
		this.port = Number(url.port || 3306);
	}

	static async connect(adminUrl: string = mysqlAdminUrl()): Promise<MysqlAdmin> {
		const connection = await mysql.createConnection({ uri: adminUrl, connectTimeout: 5000 });
		return new MysqlAdmin(connection, new URL(adminUrl));
	}

	query<T extends mysql.RowDataPacket[] | mysql.ResultSetHeader>(sql: string, values?: unknown[]) {
		return this.#connection.query<T>(sql, values).then(([rows]) => rows);
	}

	/**
	 * Creates a database and a user with a random password that may use only that database. Each test file gets
	 * its own, so connection counts per user stay exact while files run in parallel.
	 */
	async createDatabase(prefix = "t"): Promise<TestDatabase> {
		const suffix = randomBytes(4).toString("hex");
		const name = `${prefix.toLowerCase().replace(/[^a-z0-9_]/g, "_")}_${suffix}`.slice(0, 32);
		if (!identifier.test(name)) throw new Error(`bad database name ${name}`);
		const password = `pw-${randomBytes(12).toString("hex")}`;
		await this.query(`CREATE DATABASE \`${name}\``);
		await this.query(`CREATE USER '${name}'@'%' IDENTIFIED BY ?`, [password]);
		await this.query(`GRANT ALL PRIVILEGES ON \`${name}\`.* TO '${name}'@'%'`);
		return {
			host: this.host,
			port: this.port,
			user: name,
			password,
			database: name,
			url: `mysql://${name}:${encodeURIComponent(password)}@${this.host}:${this.port}/${name}`,
		};
	}

	async dropDatabase(db: TestDatabase): Promise<void> {
		await this.killUser(db.user);
		await this.query(`DROP USER IF EXISTS '${db.user}'@'%'`);
		await this.query(`DROP DATABASE IF EXISTS \`${db.database}\``);
	}

	/** The server's processlist, optionally for one user. */
	async processlist(user?: string): Promise<ProcessInfo[]> {
		const rows = await this.query<mysql.RowDataPacket[]>(
			`SELECT ID AS id, USER AS user, DB AS db, COMMAND AS command, TIME AS time, STATE AS state, INFO AS info
			 FROM information_schema.PROCESSLIST WHERE (? IS NULL OR USER = ?) ORDER BY ID`,
			[user ?? null, user ?? null],
		);
		return rows as ProcessInfo[];
	}

	/** How many connections this user has open right now, as the server counts them. */
	async connectionsOf(user: string): Promise<number> {
		return (await this.processlist(user)).length;
	}

	async status(name: "Threads_connected" | "Connections" | "Aborted_connects" | string): Promise<number> {
		const rows = await this.query<mysql.RowDataPacket[]>("SHOW GLOBAL STATUS LIKE ?", [name]);
		return Number(rows[0]?.Value ?? Number.NaN);
	}

	threadsConnected(): Promise<number> {
		return this.status("Threads_connected");
	}

	/** Total connection attempts the server has seen since it started. */
	connectionsTotal(): Promise<number> {
		return this.status("Connections");
	}

	/**
	 * How many connections `user` has opened (logged in) since the server started: exact per user, unlike the
	 * global `Connections` counter, which other test files move too. MariaDB counts them in
	 * information_schema.USER_STATISTICS once `userstat` is on (the first call switches it on: call it once before
	 * the connections to count); MySQL in performance_schema.users.
	 */
	async connectionsOpenedBy(user: string): Promise<number> {
		if ((await this.getGlobal("userstat")) !== undefined) {
			await this.setGlobal("userstat", 1);
			const rows = await this.query<mysql.RowDataPacket[]>(
				"SELECT TOTAL_CONNECTIONS AS n FROM information_schema.USER_STATISTICS WHERE USER = ?",
				[user],
			);
			return Number(rows[0]?.n ?? 0);
		}
		const rows = await this.query<mysql.RowDataPacket[]>(
			"SELECT TOTAL_CONNECTIONS AS n FROM performance_schema.users WHERE USER = ?",
			[user],
		);
		return Number(rows[0]?.n ?? 0);
	}

	/** KILL a connection from this (another) session, as an operator or a failover would. */
	async kill(id: number): Promise<void> {
		await this.query(`KILL ${Number(id)}`);
	}

	async killUser(user: string): Promise<number> {
		const processes = await this.processlist(user);
		for (const process of processes) {
			await this.kill(process.id).catch(() => {});
		}
		return processes.length;
	}

	async setGlobal(variable: string, value: string | number): Promise<void> {
		if (!/^[a-z_]+$/i.test(variable)) throw new Error(`bad variable name ${variable}`);
		await this.query(`SET GLOBAL ${variable} = ?`, [value]);
	}

	async getGlobal(variable: string): Promise<string | undefined> {
		const rows = await this.query<mysql.RowDataPacket[]>("SHOW GLOBAL VARIABLES LIKE ?", [variable]);
		return rows[0]?.Value;
	}

	/**
	 * Polls until `user` has `expected` connections (a closed socket takes a moment to leave the processlist)
	 * and returns the last count seen. Bounded: returns after `timeoutMs` whatever the count.
	 */
	async settleConnections(user: string, expected: number, timeoutMs = 2000): Promise<number> {
		const deadline = Date.now() + timeoutMs;
		let count = await this.connectionsOf(user);
		while (count !== expected && Date.now() < deadline) {
			await new Promise((resolve) => setTimeout(resolve, 20));
			count = await this.connectionsOf(user);
		}
		return count;
	}

	async close(): Promise<void> {
		await this.#connection.end().catch(() => this.#connection.destroy());
	}
}
