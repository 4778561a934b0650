// Events that are not what webhook-relay expects fail with a clear, named error (an SQS consumer has no status
// code to answer with), and never reach the partner, which is a closed port here.
import { freePort, httpApiEvent, invokeInProcess, sqsEvent } from "@middy-conn/test-harness";
import type { SQSBatchResponse } from "aws-lambda";
import { beforeAll, describe, expect, it } from "vitest";

let handler: unknown;

beforeAll(async () => {
	Object.assign(process.env, {
		PARTNER_ORIGIN: `https://127.0.0.1:${await freePort()}`,
		RELAY_PATH: "/v1/events",
		RELAY_CONCURRENCY: "2",
	});
	({ handler } = await import("../handler.ts"));
});

describe("webhook-relay: events it does not expect", () => {
	it.each<[string, unknown]>([
		["an empty event", {}],
		["no event at all", null],
		["an API Gateway event", httpApiEvent({ method: "POST", path: "/", body: { Records: [] } })],
		["an EventBridge event", { source: "aws.events", "detail-type": "Scheduled Event", detail: {} }],
		["Records that is not an array", { Records: "[]" }],
	])("%s: an InvalidEvent that says what it expected", async (_case, event) => {
		const failure = await invokeInProcess(handler, event).then(
			() => undefined,
			(error: unknown) => error as Error,
		);
		expect(failure).toMatchObject({ name: "InvalidEvent" });
		expect(failure?.message).toMatch(/expected an SQS event with a Records array/);
	});

	it("a record whose body is not JSON is reported failed, and never sent", async () => {
		const response = await invokeInProcess<SQSBatchResponse>(
			handler,
			sqsEvent([{ messageId: "not-json", body: "<xml/>" }]),
		);
		expect(response.batchItemFailures).toEqual([{ itemIdentifier: "not-json" }]);
	});

	it("an empty batch is nothing to do", async () => {
		expect(await invokeInProcess<SQSBatchResponse>(handler, sqsEvent([]))).toEqual({ batchItemFailures: [] });
	});
});
