// The servers every group talks to, on loopback only: an HTTPS peer in its own process, and a throwaway MySQL
// (the test harness's mariadbd, or MYSQL_URL). Both are registered for cleanup the moment they exist.
import type { ChildProcess } from "node:child_process";
import { mkdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { MysqlAdmin, startMysqlServer, type TestDatabase } from "@middy-conn/test-harness";
import mysql from "mysql2/promise";
import { defer, spawnTracked } from "../cleanup.ts";

export interface HttpPeer {
	origin: string;
	/** The self-signed certificate the clients must trust. */
	ca: string;
	/** The peer's own counters: connections accepted and TLS handshakes since it started. */
	stats(): Promise<{ connections: number; tlsHandshakes: number; requests: number }>;
	close(): Promise<void>;
}

export interface DbPeer {
	version: string;
	database: TestDatabase;
	/** mysql2 connection options for the benchmark's user and database. */
	config: { host: string; port: number; user: string; password: string; database: string };
	admin: MysqlAdmin;
	close(): Promise<void>;
}

const peerScript = fileURLToPath(new URL("./http-peer-process.ts", import.meta.url));

export const startHttpPeer = async (): Promise<HttpPeer> => {
	const child: ChildProcess = spawnTracked(process.execPath, [peerScript], {
		stdio: ["ignore", "inherit", "inherit", "ipc"],
		// The peer lives as long as the run; the bound is only against a run that hangs.
		timeoutMs: 30 * 60_000,
	});
	const close = defer(
		async () => {
			if (child.exitCode !== null || child.signalCode !== null) return;
			const exited = new Promise((resolve) => child.once("exit", resolve));
			child.send({ type: "close" });
			const timer = setTimeout(() => child.kill("SIGKILL"), 3000);
			await exited;
			clearTimeout(timer);
		},
		{ label: "the HTTPS peer" },
	);
	const ready = await new Promise<{ origin: string; ca: string }>((resolve, reject) => {
		const timer = setTimeout(() => reject(new Error("the HTTPS peer did not start within 20 s")), 20_000);
		child.once("exit", (code) => reject(new Error(`the HTTPS peer exited early (code ${code})`)));
		child.once("message", (message: { type: string; origin: string; ca: string }) => {
			clearTimeout(timer);
			if (message.type === "ready") resolve(message);
			else reject(new Error(`unexpected message from the HTTPS peer: ${message.type}`));
		});
	});
	return {
		origin: ready.origin,
		ca: ready.ca,
		stats: () =>
			new Promise((resolve) => {
				child.once("message", (message: { connections: number; tlsHandshakes: number; requests: number }) =>
					resolve(message),
				);
				child.send({ type: "stats" });
			}),
		close,
	};
};

/** The table every DB contender reads: one indexed row per query, so the round trip dominates, not the scan. */
const SCHEMA = [
	"CREATE TABLE orders (id INT PRIMARY KEY, customer VARCHAR(64) NOT NULL, total DECIMAL(10,2) NOT NULL)",
	"INSERT INTO orders (id, customer, total) VALUES (1, 'ada', 12.50), (2, 'grace', 99.00), (3, 'linus', 7.25)",
];

/**
 * The harness puts the server's datadir in os.tmpdir() and removes datadirs there whose owner is gone. Other
 * runs on the same machine (tests, other benchmarks) do that in /tmp; a private temp dir under .tmp/ keeps this
 * run's server out of their reach for its whole life.
 */
const startPrivateMysqlServer = async () => {
	const previous = process.env.TMPDIR;
	const privateTmp = fileURLToPath(new URL("../../.tmp/bench/tmp", import.meta.url));
	mkdirSync(privateTmp, { recursive: true });
	process.env.TMPDIR = privateTmp;
	try {
		return await startMysqlServer();
	} finally {
		if (previous === undefined) delete process.env.TMPDIR;
		else process.env.TMPDIR = previous;
	}
};

export const startDbPeer = async (): Promise<DbPeer> => {
	const server = await startPrivateMysqlServer();
	const stopServer = defer(() => server.stop(), { label: "the MySQL server" });
	const admin = await MysqlAdmin.connect(server.adminUrl);
	const closeAdmin = defer(() => admin.close(), { label: "the admin connection" });
	const database = await admin.createDatabase("bench");
	const config = {
		host: database.host,
		port: database.port,
		user: database.user,
		password: database.password,
		database: database.database,
	};
	const setup = await mysql.createConnection(config);
	for (const statement of SCHEMA) await setup.query(statement);
	await setup.end();
	return {
		version: server.version,
		database,
		config,
		admin,
		close: async () => {
			await closeAdmin();
			await stopServer();
		},
	};
};
