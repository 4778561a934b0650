// Stopping on the server what the middleware gave up on.
//
// Destroying the socket does not stop a statement: the server runs it to its end, and a transaction keeps its
// row locks until then (a timed-out invocation's SLEEP(5) ran 4.6 s more, and the next invocation's UPDATE of the
// locked row failed with ER_LOCK_WAIT_TIMEOUT). Only a KILL from another connection stops it. So when a busy
// connection is given up (Middy's timeout, the background tasks' deadline, unfinished work at the end), its
// session is killed over a short-lived side connection with the same credentials: `KILL <id>` ends the statement
// and the session at once, which rolls its transaction back and frees its locks. A user may kill its own threads.
//
// The id comes from `SELECT CONNECTION_ID()` on the connection itself, learnt when it was opened: behind RDS Proxy
// the handshake's thread id is the proxy's, not the server's. A proxy may also move a client to another server
// session between transactions, so before the KILL the side connection checks that the session still runs the
// statement we sent (the processlist's INFO, up to its first placeholder); if it runs something else, it is not
// ours and is left alone (and said so).
import { type Logger, settleWithin } from "@middy-conn/lifecycle";
import mysql from "mysql2";
import type { Connection } from "mysql2/promise";
import { destroyedError } from "./errors.ts";
import { type Core, destroyHard, socketClosed } from "./mysql2-adapter.ts";
import { poolOnlyKeys, type ResolvedConfig } from "./options.ts";

/** The server's id for this session, or undefined if it could not be learnt. */
export const learnConnectionId = async (connection: Connection): Promise<number | undefined> => {
	const [rows] = await connection.query("SELECT CONNECTION_ID() AS id");
	const id = Number((rows as { id?: unknown }[])[0]?.id);
	return Number.isSafeInteger(id) && id > 0 ? id : undefined;
};

const sideConnectionConfig = (resolved: ResolvedConfig, budgetMs: number): Record<string, unknown> => {
	const config: Record<string, unknown> = { ...resolved.driver };
	for (const key of poolOnlyKeys) delete config[key];
	delete config.resetOnRelease;
	const connectTimeout = typeof config.connectTimeout === "number" ? config.connectTimeout : budgetMs;
	config.connectTimeout = Math.max(1, Math.min(connectTimeout, Math.ceil(budgetMs)));
	return config;
};

/** The statement the session runs is ours: the text we sent, up to its first placeholder (values are formatted in). */
export const runsStatement = (info: string, sent: string): boolean => {
	const prefix = (sent.split("?")[0] ?? "").trim().slice(0, 200);
	return info.trim().startsWith(prefix);
};

/**
 * Kills the session `id` within `budgetMs`. Never rejects: says whether the server confirmed it, and warns (with
 * the driver's code, never a secret) when it could not.
 */
export const killSession = async (
	resolved: ResolvedConfig,
	id: number,
	sent: string | undefined,
	budgetMs: number,
	logger: Logger,
): Promise<boolean> => {
	const warn = (why: string, code?: unknown) =>
		logger.warn(
			`@middy-conn/mysql: could not stop the statement left running on the server (session ${id}): ${why}. It runs to its end, and its transaction keeps its locks until then`,
			{ code },
		);
	if (budgetMs < 1) {
		warn("no time was left in the invocation");
		return false;
	}
	const side = mysql.createConnection(sideConnectionConfig(resolved, budgetMs)) as unknown as Core;
	side.on("error", () => {});
	const killing = (async () => {
		const connection = side.promise();
		const [rows] = await connection.query("SELECT INFO FROM information_schema.PROCESSLIST WHERE ID = ?", [
			id,
		]);
		const info = (rows as { INFO?: unknown }[])[0]?.INFO;
		// Gone, or idle: nothing of ours is running there.
		if (typeof info !== "string") return "nothing-running" as const;
		if (sent !== undefined && !runsStatement(info, sent)) return "not-ours" as const;
		await connection.query(`KILL ${id}`);
		return "killed" as const;
	})();
	const killed = await settleWithin(killing, budgetMs);
	// Gone before the invocation returns: a socket left to close later would close in a frozen process.
	const closed = socketClosed(side);
	destroyHard(side, destroyedError("KILL sent"));
	await closed;
	if (killed.ok) {
		if ((await killing) !== "not-ours") return true;
		logger.warn(
			`@middy-conn/mysql: session ${id} runs another statement than the one given up on (a proxy may have moved the connection): not killed`,
		);
		return false;
	}
	const code = (killed.error as { code?: unknown } | undefined)?.code;
	// The session ended by itself meanwhile: nothing is left to stop.
	if (code === "ER_NO_SUCH_THREAD") return true;
	warn(killed.timedOut ? `no answer within ${Math.round(budgetMs)} ms` : "the KILL failed", code);
	return false;
};
