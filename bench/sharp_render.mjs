// The reference renderer for bench/render.py: the pipeline of the reference implementation, with
// sharp (npm ci --prefix bench), one thread. For each JSON line {"path", "out"} on stdin it
// renders that file at 100, 200 and 400 px, once per size as the reference does, and answers one
// JSON line: CPU and wall milliseconds for the avatar, PNG bytes per size, and (when "out") the
// PNGs in base64.
import { readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import sharp from "sharp";

sharp.concurrency(1); // libvips threads per image; UV_THREADPOOL_SIZE=1 limits libuv's pool
sharp.cache(false); // each avatar is a new picture: no operation cache across runs

const SIZES = [100, 200, 400];

function circle(size) {
  return Buffer.from(
    `<svg><rect x="0" y="0" width="${size}" height="${size}" rx="${size}" ry="${size}"/></svg>`,
  );
}

async function avatar(input) {
  const pngs = [];
  for (const size of SIZES) {
    pngs.push(
      await sharp(input)
        .resize(size, size)
        .composite([{ input: circle(size), blend: "dest-in" }])
        .png()
        .toBuffer(),
    );
  }
  return pngs;
}

for await (const line of createInterface({ input: process.stdin })) {
  const request = JSON.parse(line);
  const input = readFileSync(request.path);
  const cpu = process.cpuUsage();
  const start = process.hrtime.bigint();
  const pngs = await avatar(input);
  const wall = Number(process.hrtime.bigint() - start) / 1e6;
  const used = process.cpuUsage(cpu);
  const answer = {
    cpu_ms: (used.user + used.system) / 1000,
    wall_ms: wall,
    bytes: pngs.map((png) => png.length),
  };
  if (request.out) answer.pngs = pngs.map((png) => png.toString("base64"));
  process.stdout.write(JSON.stringify(answer) + "\n");
}
