import { Client } from "undici";
import { afterEach, describe, expect, it } from "vitest";
import {
	AUDIT_PATH,
	ORDERS_WEBHOOK_PATH,
	type PartnerApi,
	RELAY_EVENTS_PATH,
	startPartnerApi,
} from "../src/partner-api.ts";

const partners: PartnerApi[] = [];
const clients: Client[] = [];

const start = async (options: Parameters<typeof startPartnerApi>[0] = {}) => {
	const partner = await startPartnerApi(options);
	partners.push(partner);
	const client = new Client(partner.origin, { connect: { ca: partner.ca } });
	clients.push(client);
	return { partner, client };
};

const post = async (
	client: Client,
	path: string,
	key: string,
	body = "{}",
	headers: Record<string, string> = {},
) => {
	const response = await client.request({
		method: "POST",
		path,
		headers: { "content-type": "application/json", "idempotency-key": key, ...headers },
		body,
	});
	await response.body.dump();
	return response.statusCode;
};

afterEach(async () => {
	await Promise.all(clients.splice(0).map((client) => client.destroy()));
	await Promise.all(partners.splice(0).map((partner) => partner.close()));
});

describe("the partner API", () => {
	it("counts what it processed and what it received, per key", async () => {
		const { partner, client } = await start();
		expect(await post(client, ORDERS_WEBHOOK_PATH, "order-1")).toBe(202);
		expect(await post(client, ORDERS_WEBHOOK_PATH, "order-1")).toBe(202);
		expect(partner.accepted(ORDERS_WEBHOOK_PATH).get("order-1")).toBe(2);
		expect(partner.received(ORDERS_WEBHOOK_PATH).get("order-1")).toBe(2);
		expect(partner.peakOpenAtRequest).toBe(1);
	});

	it("refuses a flaky relay event once with a 503, without processing it, and accepts it after", async () => {
		const { partner, client } = await start();
		expect(await post(client, RELAY_EVENTS_PATH, "m-1", '{"flaky":true}')).toBe(503);
		expect(await post(client, RELAY_EVENTS_PATH, "m-1", '{"flaky":true}')).toBe(202);
		expect(partner.accepted(RELAY_EVENTS_PATH).get("m-1")).toBe(1);
		expect([...partner.refused]).toEqual(["m-1"]);
	});

	it("requires the audit token when it has one (401, not processed)", async () => {
		const { partner, client } = await start({ auditToken: "s3cret-token" });
		expect(await post(client, AUDIT_PATH, "a-1")).toBe(401);
		expect(await post(client, AUDIT_PATH, "a-1", "{}", { authorization: "Bearer s3cret-token" })).toBe(202);
		expect(partner.accepted(AUDIT_PATH).get("a-1")).toBe(1);
		expect(partner.received(AUDIT_PATH).get("a-1")).toBe(2);
	});

	it("resets the connection of a request meant to fail that way, without processing it; its retry is processed", async () => {
		const { partner, client } = await start();
		partner.failKey("m-2", { kind: "reset" });
		await expect(post(client, RELAY_EVENTS_PATH, "m-2")).rejects.toMatchObject({
			code: expect.stringMatching(/ECONNRESET|UND_ERR_SOCKET/),
		});
		expect(await post(client, RELAY_EVENTS_PATH, "m-2")).toBe(202);
		expect(partner.accepted(RELAY_EVENTS_PATH).get("m-2")).toBe(1);
		expect(partner.received(RELAY_EVENTS_PATH).get("m-2")).toBe(2);
	});

	it("does not process a slow request whose client gave up first", async () => {
		const { partner, client } = await start();
		partner.failNext(ORDERS_WEBHOOK_PATH, { kind: "slow", ms: 300 });
		await expect(
			client.request({
				method: "POST",
				path: ORDERS_WEBHOOK_PATH,
				headers: { "idempotency-key": "order-2" },
				body: "{}",
				signal: AbortSignal.timeout(50),
			}),
		).rejects.toMatchObject({ name: "TimeoutError" });
		await new Promise((resolve) => setTimeout(resolve, 400));
		expect(partner.received(ORDERS_WEBHOOK_PATH).get("order-2")).toBe(1);
		expect(partner.accepted(ORDERS_WEBHOOK_PATH).get("order-2")).toBeUndefined();
	});

	it("processes a request whose body it then stalls, and answers 4xx/5xx refusals without processing", async () => {
		const { partner, client } = await start();
		partner.failNext(ORDERS_WEBHOOK_PATH, { kind: "slow-body", ms: 300 });
		partner.failNext(ORDERS_WEBHOOK_PATH, { kind: "refuse", status: 500 });
		const response = await client.request({
			method: "POST",
			path: ORDERS_WEBHOOK_PATH,
			headers: { "idempotency-key": "order-3" },
			body: "{}",
		});
		expect(response.statusCode).toBe(202);
		expect(partner.accepted(ORDERS_WEBHOOK_PATH).get("order-3")).toBe(1);
		await response.body.dump();
		expect(await post(client, ORDERS_WEBHOOK_PATH, "order-4")).toBe(500);
		expect(partner.accepted(ORDERS_WEBHOOK_PATH).get("order-4")).toBeUndefined();
		partner.failNext(ORDERS_WEBHOOK_PATH, { kind: "refuse", status: 503 });
		partner.clearFaults();
		expect(await post(client, ORDERS_WEBHOOK_PATH, "order-5")).toBe(202);
	});

	it("processes a request and then resets its connection, so that its answer is lost", async () => {
		const { partner, client } = await start();
		partner.failKey("m-3", { kind: "reset-after" });
		await expect(post(client, RELAY_EVENTS_PATH, "m-3")).rejects.toMatchObject({
			code: expect.stringMatching(/ECONNRESET|UND_ERR_SOCKET/),
		});
		expect(partner.accepted(RELAY_EVENTS_PATH).get("m-3")).toBe(1);
		expect(partner.unanswered(RELAY_EVENTS_PATH).get("m-3")).toBe(1);
		// a retry is a second delivery
		expect(await post(client, RELAY_EVENTS_PATH, "m-3")).toBe(202);
		expect(partner.accepted(RELAY_EVENTS_PATH).get("m-3")).toBe(2);
	});
});
