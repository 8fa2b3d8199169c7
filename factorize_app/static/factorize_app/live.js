// The front page's live charts (api/front_page.py): every few seconds, ask /queues for each task
// type's queued and running jobs and live workers, and /metrics for the jobs each has ended so
// far (the job duration histogram's counts, which only grow) to make its jobs ended per second;
// keep the last minutes of samples and draw each as a small SVG line. No library: a polyline and
// an area per chart. Each chart's <figure> carries its last value, its highest and its number of
// samples as data-last, data-peak and data-count.
(function () {
  "use strict";

  const root = document.getElementById("live");
  if (!root) return;
  const pollMs = Number(root.dataset.pollMs) || 2000;
  const windowMs = pollMs * (Number(root.dataset.samples) || 150);
  const status = document.getElementById("live-status");
  const THROUGHPUT = "throughput";
  const BASE = 38; // the y of a zero in the 0 0 100 40 viewBox: a zero line shows above the edge
  const ENDED = /^factorize_job_duration_seconds_count\{([^}]*)\}\s+(\S+)/gm;

  // type name -> series name -> {figure, samples: [{t, v}]}
  const charts = {};
  for (const row of root.querySelectorAll("tr[data-type]")) {
    const series = {};
    for (const figure of row.querySelectorAll("figure[data-series]")) {
      series[figure.dataset.series] = { figure, samples: [] };
    }
    charts[row.dataset.type] = series;
  }
  let lastEnded = null; // {t, counts: {type: jobs ended so far}}
  // The time axis spans from the page's first answer to now (at least ten polls), until that is
  // the whole window: a page just opened draws across its width rather than in a sliver.
  let started = null;

  function endedCounts(text) {
    const counts = {};
    for (const match of text.matchAll(ENDED)) {
      const type = /(?:^|,)task_type="([^"]*)"/.exec(match[1]);
      if (type) counts[type[1]] = (counts[type[1]] || 0) + Number(match[2]);
    }
    return counts;
  }

  function format(series, value) {
    if (series !== THROUGHPUT) return String(Math.round(value));
    return value >= 10 ? value.toFixed(1) : value.toFixed(2);
  }

  function draw(series, chart, now, span) {
    const samples = chart.samples.filter((s) => now - s.t <= span);
    chart.samples = samples;
    const figure = chart.figure;
    const peak = Math.max(0, ...samples.map((s) => s.v));
    const top = peak || 1;
    const points = samples.map((s) => {
      const x = 100 * (1 - (now - s.t) / span);
      const y = BASE - (BASE - 2) * (s.v / top);
      return `${x.toFixed(2)},${y.toFixed(2)}`;
    });
    figure.querySelector(".line").setAttribute("points", points.join(" "));
    const [first, last] = [points[0], points.at(-1)].map((point) => point && point.split(",")[0]);
    const area = points.length ? `M${first},${BASE} L${points.join(" L")} L${last},${BASE} Z` : "";
    figure.querySelector(".area").setAttribute("d", area);
    const latest = samples.at(-1);
    figure.dataset.count = String(samples.length);
    figure.dataset.last = latest ? String(latest.v) : "";
    figure.dataset.peak = String(peak);
    figure.querySelector(".value").textContent = latest ? format(series, latest.v) : "–";
    figure.querySelector(".peak").textContent = samples.length ? `max ${format(series, peak)}` : "";
  }

  async function fetchOk(url, accept) {
    const answer = await fetch(url, { headers: { Accept: accept }, credentials: "same-origin", cache: "no-store" });
    if (!answer.ok) {
      let detail = `${answer.status}`;
      try { detail = (await answer.json()).detail || detail; } catch (e) { /* not JSON */ }
      throw new Error(`${url}: ${detail}`);
    }
    return answer;
  }

  async function poll() {
    const now = Date.now();
    const problems = [];
    try {
      const queues = await (await fetchOk(root.dataset.queuesUrl, "application/json")).json();
      for (const entry of queues) {
        const series = charts[entry.name];
        if (!series) continue; // a type this page was not rendered with
        for (const [name, chart] of Object.entries(series)) {
          if (name !== THROUGHPUT && typeof entry[name] === "number") chart.samples.push({ t: now, v: entry[name] });
        }
      }
    } catch (error) {
      problems.push(error.message);
    }
    try {
      const counts = endedCounts(await (await fetchOk(root.dataset.metricsUrl, "text/plain")).text());
      if (lastEnded) {
        const seconds = (now - lastEnded.t) / 1000;
        for (const [type, series] of Object.entries(charts)) {
          const ended = (counts[type] || 0) - (lastEnded.counts[type] || 0);
          // Fewer than before: the counts were reset (Redis emptied); no rate across it.
          if (series[THROUGHPUT] && ended >= 0) series[THROUGHPUT].samples.push({ t: now, v: ended / seconds });
        }
      }
      lastEnded = { t: now, counts };
    } catch (error) {
      problems.push(error.message);
    }
    started = started ?? now;
    const span = Math.min(windowMs, Math.max(10 * pollMs, now - started));
    for (const series of Object.values(charts)) {
      for (const [name, chart] of Object.entries(series)) draw(name, chart, now, span);
    }
    status.textContent = problems.length
      ? `Not updated: ${problems.join("; ")}.`
      : `Updated at ${new Date(now).toLocaleTimeString()}, every ${pollMs / 1000} s.`;
    root.dataset.updated = String(now);
  }

  async function loop() {
    if (!document.hidden) await poll();
    setTimeout(loop, pollMs);
  }
  loop();
})();
