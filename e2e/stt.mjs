// Transcribes a WAV file through the platform with the official openai
// npm client, unmodified, as a user would: the default json answer, then
// verbose_json with the audio's duration.
//
//   node e2e/stt.mjs BASE_URL CLIENT_KEY FILE
//
// Prints the transcript's text; exits non-zero on any failure.
import { createReadStream } from "node:fs";
import OpenAI from "openai";

const [base, key, file] = process.argv.slice(2);
const client = new OpenAI({ apiKey: key, baseURL: base.replace(/\/+$/, "") + "/api/v1" });
const fail = (what, res) => {
  console.error(what, JSON.stringify(res));
  process.exit(1);
};
const res = await client.audio.transcriptions.create({ file: createReadStream(file), model: "perceptron/dev-stt" });
if (typeof res.text !== "string" || !res.text.startsWith("Perceptron dev transcript")) fail("unexpected transcription:", res);
const verbose = await client.audio.transcriptions.create({
  file: createReadStream(file), model: "perceptron/dev-stt", response_format: "verbose_json", language: "en",
});
if (Math.abs(verbose.duration - 2.5) > 0.01 || verbose.segments?.[0]?.text !== res.text) fail("unexpected verbose_json:", verbose);
try {
  await client.audio.transcriptions.create({ file: createReadStream(file), model: "whisper-9" });
  fail("an unknown model was accepted", {});
} catch (e) {
  if (!(e instanceof OpenAI.BadRequestError) || !e.message.includes("Available STT models")) fail("unexpected error:", String(e));
}
console.log(res.text);
