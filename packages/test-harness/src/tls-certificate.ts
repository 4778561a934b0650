import { generate } from "selfsigned";

/** A private key and its self-signed certificate, both PEM. */
export interface SelfSignedCertificate {
	key: string;
	/** The certificate; clients trust the server by passing it as their `ca`. */
	cert: string;
}

let pending: Promise<SelfSignedCertificate> | undefined;

/**
 * A self-signed certificate for `localhost` and `127.0.0.1`, made at test time (never committed).
 * Made once per process: key generation is slow, and every HTTPS test server can share it.
 */
export function createSelfSignedCertificate(): Promise<SelfSignedCertificate> {
	pending ??= generateCertificate().catch((error: unknown) => {
		pending = undefined;
		throw error;
	});
	return pending;
}

async function generateCertificate(): Promise<SelfSignedCertificate> {
	const notBeforeDate = new Date(Date.now() - 60 * 60 * 1000);
	const notAfterDate = new Date(Date.now() + 7 * 24 * 60 * 60 * 1000);
	const pems = await generate([{ name: "commonName", value: "localhost" }], {
		keyType: "ec",
		curve: "P-256",
		algorithm: "sha256",
		notBeforeDate,
		notAfterDate,
		extensions: [
			{ name: "basicConstraints", cA: false },
			{ name: "keyUsage", digitalSignature: true, critical: true },
			{ name: "extKeyUsage", serverAuth: true },
			{
				name: "subjectAltName",
				altNames: [
					{ type: 2, value: "localhost" },
					{ type: 7, ip: "127.0.0.1" },
				],
			},
		],
	});
	return { key: pems.private, cert: pems.cert };
}
