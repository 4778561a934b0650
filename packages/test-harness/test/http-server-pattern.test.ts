// The `/pattern` route: a large body whose every byte a client can check, whole or failing midway.
import { createHash } from "node:crypto";
import { Client } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { patternBytes, startHttpServer, type TestHttpServer } from "../src/http-server.ts";

let server: TestHttpServer;
let client: Client;

beforeAll(async () => {
	server = await startHttpServer();
	client = new Client(server.origin);
});

afterAll(async () => {
	await client.destroy();
	await server.close();
});

const sha256 = (bytes: Buffer) => createHash("sha256").update(bytes).digest("hex");

describe("the /pattern route", () => {
	it("numbers each 4-byte group with its index", () => {
		expect([...patternBytes(0, 8)]).toEqual([0, 0, 0, 0, 0, 0, 0, 1]);
		expect([...patternBytes(1022, 4)]).toEqual([0, 0xff, 0, 0]);
		expect(patternBytes(5, 7).equals(patternBytes(0, 12).subarray(5))).toBe(true);
	});

	it("serves exactly the bytes patternBytes makes, with their length", async () => {
		const bytes = 3 * 1024 * 1024 + 3;
		const response = await client.request({ method: "GET", path: `/pattern?bytes=${bytes}` });
		expect(response.headers["content-length"]).toBe(String(bytes));
		const body = Buffer.from(await response.body.arrayBuffer());
		expect(sha256(body)).toBe(sha256(patternBytes(0, bytes)));
	});

	it("sends failAfter bytes of the announced length, then closes: the client's body fails", async () => {
		const response = await client.request({ method: "GET", path: "/pattern?bytes=1000000&failAfter=200000" });
		expect(response.statusCode).toBe(200);
		let received = 0;
		const read = (async () => {
			for await (const chunk of response.body) received += (chunk as Buffer).length;
		})();
		await expect(read).rejects.toMatchObject({ code: "UND_ERR_SOCKET" });
		expect(received).toBe(200000);
	});
});
