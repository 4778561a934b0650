import { invokeInProcess, sqsEvent } from "@middy-conn/test-harness";
import { useHttpServer } from "@middy-conn/test-harness/test-fixtures";
import type { SQSBatchResponse } from "aws-lambda";
import { beforeAll, beforeEach, describe, expect, it } from "vitest";

const CONCURRENCY = 3;

let handler: unknown;
/** Requests the partner is answering right now, and the most it ever had at once. */
let inFlight = 0;
let mostInFlight = 0;

const relay = (messages: Parameters<typeof sqsEvent>[0], timeoutMs?: number) =>
	invokeInProcess<SQSBatchResponse>(handler, sqsEvent(messages), timeoutMs ? { timeoutMs } : {});

const failedIds = (response: SQSBatchResponse) =>
	response.batchItemFailures.map((failure) => failure.itemIdentifier).sort();

const messages = (count: number, prefix: string, body: (i: number) => unknown = (i) => ({ n: i })) =>
	Array.from({ length: count }, (_, i) => ({ messageId: `${prefix}-${i}`, body: body(i) }));

const partner = useHttpServer({
	routes: {
		// The partner's API: 202 for an event, 422 for one it refuses; it takes a little while, so requests overlap.
		"/v1/events": (_request, response, received) => {
			inFlight++;
			mostInFlight = Math.max(mostInFlight, inFlight);
			setTimeout(() => {
				inFlight--;
				const refused = received.body.includes('"refuse":true');
				response.writeHead(refused ? 422 : 202, { "content-type": "application/json" }).end("{}");
			}, 20);
		},
	},
});

beforeAll(async () => {
	Object.assign(process.env, {
		PARTNER_ORIGIN: partner.origin,
		RELAY_PATH: "/v1/events",
		RELAY_CONCURRENCY: String(CONCURRENCY),
	});
	({ handler } = await import("../handler.ts"));
});

beforeEach(() => {
	mostInFlight = 0;
});

describe("webhook-relay", () => {
	it("relays every record once, keyed by its message id, and reports no failure", async () => {
		const response = await relay(messages(10, "ok"));
		expect(response).toEqual({ batchItemFailures: [] });
		expect(partner.receivedCount("POST", "/v1/events")).toBe(10);
		expect(partner.received.map((request) => request.headers["idempotency-key"]).sort()).toEqual(
			messages(10, "ok")
				.map((message) => message.messageId)
				.sort(),
		);
		expect(partner.received[0]?.body).toBe('{"n":0}');
	});

	it("reports only the records that failed, so that SQS retries only those", async () => {
		const batch = [
			...messages(4, "fine"),
			{ messageId: "refused-1", body: { refuse: true } },
			{ messageId: "not-json", body: "this is not JSON" },
			{ messageId: "refused-2", body: { refuse: true } },
		];
		const response = await relay(batch);
		expect(failedIds(response)).toEqual(["not-json", "refused-1", "refused-2"]);
		// The record that is not JSON never reached the partner.
		expect(partner.receivedCount("POST", "/v1/events")).toBe(6);
	});

	it(`never has more than RELAY_CONCURRENCY (${CONCURRENCY}) requests in flight, over as many connections`, async () => {
		await relay(messages(20, "burst"));
		expect(partner.receivedCount("POST", "/v1/events")).toBe(20);
		expect(mostInFlight).toBeLessThanOrEqual(CONCURRENCY);
		expect(partner.stats.open).toBeLessThanOrEqual(CONCURRENCY);
	});

	it("relays a warm instance's next batch over the connections it already has", async () => {
		await relay(messages(6, "first"));
		partner.resetStats();
		const response = await relay(messages(6, "second"));
		expect(response.batchItemFailures).toEqual([]);
		expect(partner.stats.connections).toBe(0);
		expect(partner.stats.requests).toBe(6);
	});

	it("does not start records when too little time is left, and reports them for a retry", async () => {
		const response = await relay(messages(3, "late"), 500);
		expect(failedIds(response)).toEqual(["late-0", "late-1", "late-2"]);
		expect(partner.receivedCount()).toBe(0);
	});
});
