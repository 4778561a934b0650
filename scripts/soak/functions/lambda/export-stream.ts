// export-stream, one of the soak's own functions (bundled into the fixture): a function in response-streaming
// mode (Middy's executionModeStreamifyResponse) with both middlewares. Its body streams rows from context.db (a
// mysql2 query stream on the invocation's connection) and then a partner's body (a GET through context.http,
// proxied as it arrives). Both keep their connections until the body's last byte: Middy runs the `after`s before
// the body is written, and the middlewares hand their teardown to the body's end.
//
// It also records the export in the same managed transaction (`transaction: true`), before the first byte: the
// record is committed when the body has ended (its source read to its last byte), and rolled back when the body
// fails before that (a partner body that breaks off, a response stream that fails). A response stream that
// breaks once the source has ended, on the last bytes still on their way to the client, leaves the export
// committed: the answer was lost after the commit, as a standard-mode answer can be.
//
// Middy's early timeout fires 250 ms before Lambda's, as in the examples: time for the middlewares to stop a
// statement still running (a KILL over a new connection) before the process is frozen.
//
// Lambda's `awslambda` global is the test harness's stand-in (lambda-streaming.ts), installed before Middy reads it.
import { Readable } from "node:stream";
import middy from "@middy/core";
import { executionModeStreamifyResponse } from "@middy/core/executionModeStreamifyResponse";
import { httpPool } from "@middy-conn/http-pool";
import { mysqlConnection } from "@middy-conn/mysql";
import { installLambdaStreaming } from "@middy-conn/test-harness/lambda-streaming";
import type { Connection as CoreConnection } from "mysql2";
import type { Connection } from "mysql2/promise";

installLambdaStreaming();

const required = (name: string): string => {
	const value = process.env[name];
	if (!value) throw new Error(`environment variable ${name} is not set`);
	return value;
};

export interface ExportEvent {
	exportId: string;
	/** Tags the raw statement (the fault middleware tags those of context.db). */
	tag: string;
	/** The first `rows` rows of soak_stream_rows, as NDJSON. */
	rows: number;
	/** Then `bytes` bytes of the partner's /pattern body; it breaks off after `failAfter` bytes when set. */
	bytes: number;
	failAfter?: number;
}

export class InvalidEvent extends Error {
	override name = "InvalidEvent";
}

const parseExport = (event: unknown): ExportEvent => {
	const { exportId, tag, rows, bytes, failAfter } = (event ?? {}) as Partial<ExportEvent>;
	if (typeof exportId !== "string" || !/^[a-z0-9-]{1,64}$/.test(exportId)) {
		throw new InvalidEvent("exportId must be 1 to 64 lowercase letters, digits and dashes");
	}
	if (typeof tag !== "string" || !/^\/\* soak:[a-z0-9-]+ \*\/$/.test(tag)) throw new InvalidEvent("bad tag");
	if (!Number.isSafeInteger(rows) || (rows as number) < 0 || (rows as number) > 100_000) {
		throw new InvalidEvent("rows must be an integer from 0 to 100000");
	}
	if (!Number.isSafeInteger(bytes) || (bytes as number) < 0 || (bytes as number) > 16 * 1024 * 1024) {
		throw new InvalidEvent("bytes must be an integer from 0 to 16 MiB");
	}
	return {
		exportId,
		tag,
		rows: rows as number,
		bytes: bytes as number,
		...(failAfter === undefined ? {} : { failAfter }),
	};
};

/** The core (callback) connection behind the promise one: the one with query(...).stream(). */
const coreOf = (connection: Connection) =>
	(connection as unknown as { connection: CoreConnection }).connection;

/** Chunks of about this size go to the response stream (rows are small). */
const CHUNK = 8 * 1024;

/** As the examples: Middy's early timeout leaves the middlewares time to KILL a statement still running. */
export const TIMEOUT_EARLY_MS = 250;

export const exportStream = middy({
	executionMode: executionModeStreamifyResponse,
	timeoutEarlyInMillis: TIMEOUT_EARLY_MS,
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
			transaction: true,
			logger: console,
			config: {
				host: required("DB_HOST"),
				port: Number(process.env.DB_PORT ?? 3306),
				user: required("DB_USER"),
				password: required("DB_PASSWORD"),
				database: required("DB_NAME"),
			},
		}),
	)
	.handler(async (event, context) => {
		const request = parseExport(event);
		// Committed with the body's last byte (transaction: true), rolled back if the body fails.
		await context.db.query(
			"INSERT INTO soak_exports (export_id, source_rows, partner_bytes) VALUES (?, ?, ?)",
			[request.exportId, request.rows, request.bytes],
		);
		const db = context.db;
		const http = context.http;
		async function* body() {
			if (request.rows > 0) {
				const connection = await db.connection();
				const rows = coreOf(connection)
					.query(`${request.tag} SELECT id, payload FROM soak_stream_rows WHERE id <= ? ORDER BY id`, [
						request.rows,
					])
					.stream();
				let pending = "";
				for await (const row of rows as AsyncIterable<{ id: number; payload: string }>) {
					pending += `${JSON.stringify({ id: row.id, payload: row.payload })}\n`;
					if (pending.length >= CHUNK) {
						yield Buffer.from(pending);
						pending = "";
					}
				}
				if (pending) yield Buffer.from(pending);
			}
			if (request.bytes > 0) {
				// Requested while the body streams: after the `after`s ran, before teardown (which waits for the body).
				const failAfter = request.failAfter === undefined ? "" : `&failAfter=${request.failAfter}`;
				const { statusCode, body: partnerBody } = await http.request({
					path: `/pattern?bytes=${request.bytes}${failAfter}`,
					method: "GET",
				});
				if (statusCode !== 200) {
					await partnerBody.dump();
					throw new Error(`the partner answered ${statusCode} for the export's data`);
				}
				for await (const chunk of partnerBody) yield chunk as Buffer;
			}
		}
		return {
			statusCode: 200,
			headers: { "content-type": "application/x-ndjson" },
			body: Readable.from(body(), { objectMode: false }),
		};
	});
