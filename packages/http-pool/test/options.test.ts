import { describe, expect, it } from "vitest";
import { closeHttpPools, defaults, httpPool, httpPoolValidateOptions } from "../src/index.ts";
import { undiciConnectorKeys } from "../src/undici-adapter.ts";
import { spyLogger } from "./helpers.ts";

describe("options", () => {
	// Each bad value fails when httpPool() is called (at cold start), with a TypeError naming the option.
	const invalid: Array<[string, Record<string, unknown>, RegExp]> = [
		[
			"origin with a path",
			{ origin: "https://api.example.com/v1" },
			/'origin' must be an origin without path/,
		],
		[
			"origin with a query",
			{ origin: "https://api.example.com?x=1" },
			/'origin' must be an origin without path/,
		],
		["origin that is not a URL", { origin: "api.example.com" }, /'origin' must be an http\(s\) URL origin/],
		["origin with another scheme", { origin: "ftp://api.example.com" }, /'origin' must use http: or https:/],
		["origin that is not a string", { origin: 42 }, /'origin' must be string/],
		["connections of 0", { connections: 0 }, /'connections' must be >= 1/],
		["connections not an integer", { connections: 2.5 }, /'connections' must be integer/],
		["keepAliveTimeout of 0", { keepAliveTimeout: 0 }, /'keepAliveTimeout' must be > 0/],
		[
			"keepAliveMaxTimeout below keepAliveTimeout",
			{ keepAliveTimeout: 5000, keepAliveMaxTimeout: 1000 },
			/'keepAliveMaxTimeout'.*must be >= 'keepAliveTimeout'/,
		],
		["connectTimeout as a string", { connectTimeout: "3s" }, /'connectTimeout' must be number/],
		["headersTimeout below 0", { headersTimeout: -1 }, /'headersTimeout' must be >= 0/],
		["bodyTimeout not a number", { bodyTimeout: Number.NaN }, /'bodyTimeout' must be number/],
		["connect not an object", { connect: "tls" }, /'connect' must be object/],
		["connect.ca of the wrong type", { connect: { ca: 42 } }, /'connect.ca' must be a PEM string/],
		[
			"connect.rejectUnauthorized as a string",
			{ connect: { rejectUnauthorized: "no" } },
			/'connect.rejectUnauthorized' must be boolean/,
		],
		[
			"connect.timeout instead of connectTimeout",
			{ connect: { timeout: 1000 } },
			/'connect.timeout' is not supported; use 'connectTimeout'/,
		],
		["allowH2 as a string", { allowH2: "yes" }, /'allowH2' must be boolean/],
		["retry as true", { retry: true }, /'retry' must be false or an object/],
		["retry.maxRetries below 0", { retry: { maxRetries: -1 } }, /'retry.maxRetries' must be >= 0/],
		["retry with an unknown key", { retry: { statusCodes: [503] } }, /Unknown option 'retry.statusCodes'/],
		["interceptors not an array", { interceptors: () => {} }, /'interceptors' must be array/],
		[
			"an interceptor that is not a function",
			{ interceptors: ["retry"] },
			/'interceptors\[0\]' must be instanceof Function/,
		],
		["an empty contextKey", { contextKey: "" }, /'contextKey' must have length >= 1/],
		["waitUntilReserve below 0", { waitUntilReserve: -5 }, /'waitUntilReserve' must be >= 0/],
		["waitUntilTimeout as a string", { waitUntilTimeout: "10s" }, /'waitUntilTimeout' must be number/],
		[
			"logger without the log methods",
			{ logger: { log() {} } },
			/'logger' must be false or an object with info, warn and error/,
		],
		["logger as true", { logger: true }, /'logger' must be false or an object/],
		["onStats not a function", { onStats: "console" }, /'onStats' must be instanceof Function/],
		["logStats as a string", { logStats: "yes" }, /'logStats' must be boolean/],
		["an unknown option", { conections: 4 }, /Unknown option 'conections'/],
	];

	it.each(invalid)("rejects %s with a TypeError that names it", (_label, options, message) => {
		const call = () => httpPool(options as never);
		expect(call).toThrow(TypeError);
		expect(call).toThrow(message);
	});

	it("marks its TypeErrors with the package, as Middy's own do", () => {
		try {
			httpPool({ connections: 0 });
			expect.unreachable();
		} catch (error) {
			expect((error as Error).cause).toMatchObject({ package: "@middy-conn/http-pool" });
		}
	});

	it("accepts an origin with a port or a trailing slash, and every option at once", async () => {
		expect(() =>
			httpPool({
				origin: "http://127.0.0.1:8080/",
				connections: 4,
				keepAliveTimeout: 2000,
				keepAliveMaxTimeout: 20_000,
				connectTimeout: 1000,
				headersTimeout: 5000,
				bodyTimeout: 5000,
				connect: { ca: "-----BEGIN CERTIFICATE-----", servername: "api.internal" },
				allowH2: true,
				retry: { maxRetries: 1, minTimeout: 10, maxTimeout: 100, timeoutFactor: 3 },
				interceptors: [(dispatch) => dispatch],
				contextKey: "api",
				waitUntilReserve: 200,
				waitUntilTimeout: 3000,
				logger: false,
				onStats: () => {},
				logStats: true,
			}),
		).not.toThrow();
		expect(() => httpPool({ retry: false })).not.toThrow();
		await closeHttpPools();
	});

	it("has defaults chosen for Lambda: finite timeouts, keep-alive under load balancer idle timeouts, HTTP/1.1", () => {
		expect(defaults).toMatchObject({
			connections: 10,
			keepAliveTimeout: 4000,
			keepAliveMaxTimeout: 30_000,
			connectTimeout: 3000,
			headersTimeout: 10_000,
			bodyTimeout: 10_000,
			allowH2: false,
			retry: { maxRetries: 2 },
			contextKey: "http",
			waitUntilReserve: 500,
			waitUntilTimeout: 10_000,
			logStats: false,
		});
		expect(defaults.keepAliveMaxTimeout).toBeLessThan(60_000);
	});

	it("defaults.connect verifies certificates, and a connect option given keeps that unless it says otherwise", () => {
		expect(defaults.connect).toEqual({ rejectUnauthorized: true });
		expect(httpPoolValidateOptions({ connect: { servername: "api.internal" } }).connect).toEqual({
			rejectUnauthorized: true,
			servername: "api.internal",
		});
		expect(httpPoolValidateOptions({ connect: { rejectUnauthorized: false } }).connect).toEqual({
			rejectUnauthorized: false,
		});
	});

	it.each(undiciConnectorKeys)(
		"connect.%s, a key undici's connector reads, passes without a warning",
		async (key) => {
			const logger = spyLogger();
			httpPool({ connect: { [key]: undefined }, logger });
			expect(logger.warn).not.toHaveBeenCalled();
			await closeHttpPools();
		},
	);

	it("a misspelt connect key is named in a warning, with the key it was probably meant to be", async () => {
		const logger = spyLogger();
		httpPool({ connect: { preferH2c: true } as never, logger });
		expect(logger.warn).toHaveBeenCalledWith(
			"@middy-conn/http-pool: 'connect.preferH2c' is not an option Node's tls knows (did you mean 'preferH2'?); it is passed on as it is",
		);
		await closeHttpPools();
	});

	it("warns when certificate verification is switched off, which never happens silently", async () => {
		const logger = spyLogger();
		httpPool({ connect: { rejectUnauthorized: false }, logger });
		expect(logger.warn).toHaveBeenCalledWith(expect.stringContaining("TLS certificates are NOT verified"));
		await closeHttpPools();
	});
});
