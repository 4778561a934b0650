// ledger-batch, one of the soak's own functions (bundled into the fixture, run in two environments: ledger-batch,
// one invocation at a time and frozen in between; batch-lmi, several at once, as Lambda Managed Instances run
// them). It writes a batch of ledger lines in ONE transaction (`mysqlConnection({ transaction: true })`: committed
// by the middleware once the handler and every `after` succeeded) and reserves the batch with a partner in the
// middle of it (`context.http`).
//
// Its Middy has a custom `timeoutEarlyResponse` that answers: when the handler runs out of time, Middy hands back
// that answer and runs the `after`s as on success, while the handler is still running. The middleware must then
// not commit what the handler wrote so far; it rolls back, and the invocation fails with
// MIDDY_CONN_MYSQL_UNFINISHED. The soak makes a handler run out of time mid-batch (`pause`): during a statement
// (`SELECT SLEEP`), during a request to the partner (answered slowly), or while it awaits something else (a timer).
// The timer is the documented gap (packages/mysql/README.md, "Closing, on every path"): neither middleware tracks
// it, so the invocation looks finished, and the lines written before it are committed. The soak keeps that
// variant to show the gap, and counts it on its own line.
import middy from "@middy/core";
import { httpPool } from "@middy-conn/http-pool";
import { mysqlConnection } from "@middy-conn/mysql";
import type { ResultSetHeader } from "mysql2";

const required = (name: string): string => {
	const value = process.env[name];
	if (!value) throw new Error(`environment variable ${name} is not set`);
	return value;
};

/** What Middy hands back when the handler runs out of time: an answer, not an error. */
export const TIMEOUT_ANSWER = { accepted: false, reason: "timed out: the batch was not written" } as const;
/** Middy's early timeout fires this long before Lambda's deadline, which leaves the middleware time to KILL. */
export const TIMEOUT_EARLY_MS = 250;
/** The partner path the batch is reserved on (partner-api.ts's deliveries endpoint). */
const PARTNER_PATH = process.env.PARTNER_PATH ?? "/v1/events";

export interface BatchEvent {
	batchId: string;
	/** The amounts of the batch's lines, in cents. */
	lines: number[];
	/** The handler runs out of time before line `after` (0-based): how it is held up, and for how long. */
	pause?: { after: number; kind: "sql" | "http" | "js"; ms: number };
}

export interface BatchAnswer {
	batchId: string;
	lines: number;
}

export class InvalidEvent extends Error {
	override name = "InvalidEvent";
}

const parseBatch = (event: unknown): BatchEvent => {
	const { batchId, lines, pause } = (event ?? {}) as Partial<BatchEvent>;
	if (typeof batchId !== "string" || !/^[a-z0-9-]{1,64}$/.test(batchId)) {
		throw new InvalidEvent("batchId must be 1 to 64 lowercase letters, digits and dashes");
	}
	if (!Array.isArray(lines) || lines.length === 0 || lines.length > 50) {
		throw new InvalidEvent("lines must be an array of 1 to 50 amounts");
	}
	if (!lines.every((cents) => Number.isSafeInteger(cents) && cents > 0 && cents <= 1_000_000)) {
		throw new InvalidEvent("every line must be an integer amount of 1 to 1000000 cents");
	}
	return { batchId, lines, ...(pause ? { pause } : {}) };
};

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

const pool = process.env.DB_MODE === "pool";

export const ledgerBatch = middy<unknown, BatchAnswer | typeof TIMEOUT_ANSWER>({
	timeoutEarlyInMillis: TIMEOUT_EARLY_MS,
	timeoutEarlyResponse: () => TIMEOUT_ANSWER,
})
	.use(
		httpPool({
			origin: required("PARTNER_ORIGIN"),
			connections: 2,
			logger: console,
			headersTimeout: Number(process.env.SOAK_HEADERS_TIMEOUT_MS ?? 10_000),
			bodyTimeout: Number(process.env.SOAK_BODY_TIMEOUT_MS ?? 10_000),
		}),
	)
	.use(
		mysqlConnection({
			mode: pool ? "pool" : "scoped",
			transaction: true,
			logger: console,
			config: {
				host: required("DB_HOST"),
				port: Number(process.env.DB_PORT ?? 3306),
				user: required("DB_USER"),
				password: required("DB_PASSWORD"),
				database: required("DB_NAME"),
				...(pool ? { connectionLimit: Number(process.env.DB_CONNECTION_LIMIT ?? 2) } : {}),
			},
		}),
	)
	.handler(async (event, context) => {
		const batch = parseBatch(event);
		const { batchId, lines, pause } = batch;
		for (let i = 0; i < lines.length; i++) {
			if (pause?.after === i) {
				if (pause.kind === "sql") await context.db.query("SELECT SLEEP(?) AS paused", [pause.ms / 1000]);
				else if (pause.kind === "js") await sleep(pause.ms);
				else {
					// The soak has the partner answer this one slowly.
					const { body } = await context.http.request({
						path: PARTNER_PATH,
						method: "POST",
						headers: { "content-type": "application/json", "idempotency-key": `hold-${batchId}` },
						body: JSON.stringify({ type: "batch.hold", batchId }),
						idempotent: true,
					});
					await body.dump();
				}
			}
			await context.db.query<ResultSetHeader>(
				"INSERT INTO soak_batch_lines (batch_id, line_no, amount_cents) VALUES (?, ?, ?)",
				[batchId, i + 1, lines[i]],
			);
			if (i === 0) {
				// Reserved with the partner in the middle of the transaction: with an idempotency key, since a request
				// that met a connection closed while the environment was frozen may be sent again.
				const { statusCode, body } = await context.http.request({
					path: PARTNER_PATH,
					method: "POST",
					headers: { "content-type": "application/json", "idempotency-key": `batch-${batchId}` },
					body: JSON.stringify({ type: "batch.reserved", batchId, lines: lines.length }),
					idempotent: true,
				});
				await body.dump();
				if (statusCode !== 202) throw new Error(`the partner answered ${statusCode} to the reservation`);
			}
		}
		return { batchId, lines: lines.length };
	});
