import { describe, expect, it } from "vitest";
import { optionsKey } from "../src/index.ts";

describe("options key of a module-level pool", () => {
	it("is the same for equal options in any key order", () => {
		expect(optionsKey({ a: 1, b: { c: "x", d: [1, 2] } })).toBe(
			optionsKey({ b: { d: [1, 2], c: "x" }, a: 1 }),
		);
	});

	it("treats an undefined field as absent (the default)", () => {
		expect(optionsKey({ a: 1, b: undefined })).toBe(optionsKey({ a: 1 }));
	});

	it("compares Buffers by content, so a CA read again keys the same pool", () => {
		expect(optionsKey({ ca: Buffer.from("pem") })).toBe(optionsKey({ ca: Buffer.from("pem") }));
		expect(optionsKey({ ca: Buffer.from("pem") })).not.toBe(optionsKey({ ca: Buffer.from("other") }));
	});

	it("compares functions and class instances by identity", () => {
		const interceptor = () => () => true;
		expect(optionsKey({ i: [interceptor] })).toBe(optionsKey({ i: [interceptor] }));
		expect(optionsKey({ i: [interceptor] })).not.toBe(optionsKey({ i: [() => () => true] }));
		class Connector {}
		const connector = new Connector();
		expect(optionsKey({ c: connector })).toBe(optionsKey({ c: connector }));
		expect(optionsKey({ c: connector })).not.toBe(optionsKey({ c: new Connector() }));
	});

	it("tells different values apart", () => {
		expect(optionsKey({ connections: 1 })).not.toBe(optionsKey({ connections: 2 }));
		expect(optionsKey({ v: "1" })).not.toBe(optionsKey({ v: 1 }));
	});
});
