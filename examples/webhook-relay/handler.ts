// Webhook relay: an SQS batch consumer that forwards each message to a partner's HTTP API.
//
// - Each record is one POST, through a connection pool that lives as long as the execution environment: a warm
//   instance relays a batch without a single new TCP or TLS handshake.
// - At most RELAY_CONCURRENCY records are in flight at once, and the pool has as many connections: the partner
//   sees at most RELAY_CONCURRENCY × (concurrent instances) connections from us.
// - The function reports partial batch failures: only the records that failed go back to the queue (the event
//   source mapping needs `FunctionResponseTypes: [ReportBatchItemFailures]`, see template.yaml). Records that
//   keep failing reach the dead-letter queue after the queue's maxReceiveCount.

import middy from "@middy/core";
import { httpPool } from "@middy-conn/http-pool";
import type { SQSBatchItemFailure, SQSBatchResponse, SQSEvent, SQSRecord } from "aws-lambda";

const required = (name: string): string => {
	const value = process.env[name];
	if (!value) throw new Error(`environment variable ${name} is not set`);
	return value;
};

const concurrency = Number(process.env.RELAY_CONCURRENCY ?? 4);
if (!Number.isInteger(concurrency) || concurrency < 1)
	throw new Error("RELAY_CONCURRENCY must be a positive integer");
const relayPath = process.env.RELAY_PATH ?? "/v1/events";
/** Records are not started with less time than this left: they are reported as failed and retried later. */
const reserveMs = 2_000;

/** An event that is not an SQS batch (a misconfigured trigger, a test event): retrying it cannot succeed. */
class InvalidEvent extends Error {
	override name = "InvalidEvent";
}

/** Runs `work` on every item, never more than `limit` at a time. */
const forEachConcurrently = async <T>(
	items: readonly T[],
	limit: number,
	work: (item: T) => Promise<void>,
) => {
	let next = 0;
	const worker = async () => {
		while (next < items.length) {
			const item = items[next++] as T;
			await work(item);
		}
	};
	await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
};

// Middy's early timeout fires 250 ms before Lambda's: time for the middleware to abort what the handler left
// running and report the batch's failures before Lambda stops the process.
const middyOptions = { timeoutEarlyInMillis: 250 };

export const handler = middy<SQSEvent, SQSBatchResponse>(middyOptions)
	.use(
		httpPool({
			origin: required("PARTNER_ORIGIN"),
			connections: concurrency,
			logger: console,
		}),
	)
	.handler(async (event, context, { signal }) => {
		if (!Array.isArray((event as Partial<SQSEvent> | null)?.Records)) {
			throw new InvalidEvent(
				"expected an SQS event with a Records array: is this function's trigger an SQS queue?",
			);
		}
		const failures: SQSBatchItemFailure[] = [];

		const relay = async (record: SQSRecord) => {
			if (context.getRemainingTimeInMillis() < reserveMs)
				throw new Error("not started: too little time left");
			// The partner takes JSON; a body that is not JSON never will be, so it fails (and ends in the DLQ).
			JSON.parse(record.body);
			const { statusCode, body } = await context.http.request({
				path: relayPath,
				method: "POST",
				headers: { "content-type": "application/json", "idempotency-key": record.messageId },
				body: record.body,
				// The partner deduplicates on the idempotency key (SQS itself delivers at least once), so a POST that
				// met a connection closed while the instance was frozen may be sent again on a new one.
				idempotent: true,
				// Middy aborts this signal just before the function times out.
				signal,
			});
			await body.dump();
			if (statusCode < 200 || statusCode >= 300) throw new Error(`partner answered ${statusCode}`);
		};

		await forEachConcurrently(event.Records, concurrency, async (record) => {
			try {
				await relay(record);
			} catch (error) {
				console.warn("relay failed", { messageId: record.messageId, error: String(error) });
				failures.push({ itemIdentifier: record.messageId });
			}
		});
		return { batchItemFailures: failures };
	});
