// Measures the dashboard's view as shown (tests/server/test_dashboard_layout.py):
// what is past the right edge, text under 11 px, headers not over their columns,
// 12 h times, what is cut, and the flow map's labels. Evaluated by Playwright.
() => {
  const vw = window.innerWidth;
  const name = (el) => el.tagName.toLowerCase() + (el.id ? "#" + el.id : "") +
    (el.className && typeof el.className === "string" ? "." + el.className.trim().split(/\s+/).join(".") : "");
  const shown = (el) => {
    const r = el.getBoundingClientRect();
    if (r.width === 0 && r.height === 0) return false;
    const cs = getComputedStyle(el);
    return cs.visibility !== "hidden" && cs.display !== "none" && Number(cs.opacity) > 0;
  };
  const out = { scrollWidth: document.documentElement.scrollWidth, innerWidth: vw,
                wide: [], small: [], misaligned: [] };
  for (const el of document.querySelectorAll("body *")) {
    if (!shown(el)) continue;
    const r = el.getBoundingClientRect();
    if (r.right > vw + 0.5) out.wide.push(`${name(el)} right=${Math.round(r.right)}`);
    const text = [...el.childNodes].filter((n) => n.nodeType === 3 && n.textContent.trim());
    const size = parseFloat(getComputedStyle(el).fontSize);
    if (text.length && size < 11) out.small.push(`${name(el)} ${size}px "${text[0].textContent.trim().slice(0, 30)}"`);
  }
  const textBox = (cell) => {
    const range = document.createRange();
    range.selectNodeContents(cell);
    const rects = [...range.getClientRects()].filter((r) => r.width > 0);
    if (!rects.length) return null;
    return { left: Math.min(...rects.map((r) => r.left)), right: Math.max(...rects.map((r) => r.right)) };
  };
  for (const table of document.querySelectorAll("table")) {
    if (!shown(table) || !table.tHead || !table.tBodies[0]) continue;
    const heads = [...table.tHead.rows[0].cells];
    // Rows that span columns (a note across the rest of a row) are measured only
    // in the columns where a cell starts; their spans must still add up.
    const plain = [...table.tBodies[0].rows].filter((row) => [...row.cells].every((c) => c.colSpan === 1));
    const spanning = [...table.tBodies[0].rows].filter((row) => !plain.includes(row));
    for (const row of [...plain.slice(0, 5), ...spanning.slice(0, 2)]) {
      const spans = [...row.cells].reduce((n, c) => n + c.colSpan, 0);
      if (spans !== heads.length) {
        out.misaligned.push(`${name(table)}: ${heads.length} headers, a row of ${spans} columns`);
        continue;
      }
      const starts = [];
      for (const c of row.cells) { starts.push(c); for (let k = 1; k < c.colSpan; k++) starts.push(null); }
      heads.forEach((th, i) => {
        const td = starts[i];
        if (td === null) return;
        const a = th.getBoundingClientRect();
        const b = td.getBoundingClientRect();
        const where = `${name(table)} column ${i} "${th.textContent.trim()}"`;
        if (Math.abs(a.left - b.left) > 1) out.misaligned.push(`${where}: header at ${a.left}, cells at ${b.left}`);
        if (td.colSpan > 1) return;  // a note across columns: only where it starts
        const ta = getComputedStyle(th).textAlign;
        const tb = getComputedStyle(td).textAlign;
        if (ta !== tb) out.misaligned.push(`${where}: header ${ta}, cells ${tb}`);
        const ha = textBox(th);
        const ca = textBox(td);
        if (!ha || !ca) return;
        if (tb === "right" || tb === "end") {
          if (Math.abs(ha.right - ca.right) > 1) out.misaligned.push(`${where}: header text ends at ${ha.right}, cell text at ${ca.right}`);
        } else if (tb !== "center" && Math.abs(ha.left - ca.left) > 1) {
          out.misaligned.push(`${where}: header text starts at ${ha.left}, cell text at ${ca.left}`);
        }
      });
    }
  }
  out.misaligned = [...new Set(out.misaligned)];
  // 24 h local time everywhere: no AM/PM in the text, no field that shows the
  // browser's locale (datetime-local and time fields show 12 h in en-US).
  out.clock12 = [...document.body.innerText.matchAll(/\b\d{1,2}:\d{2}(:\d{2})?\s?[AP]M\b/gi)].map((m) => m[0]);
  for (const el of document.querySelectorAll('input[type="datetime-local"], input[type="time"]')) {
    out.clock12.push(`${name(el)} (type ${el.type})`);
  }
  // What is shown whole is not cut: a pre or a card that would scroll hides its end.
  out.clipped = [...document.querySelectorAll("#view pre, #view .card")].filter(shown)
    .filter((el) => el.scrollHeight > el.clientHeight + 1 || el.scrollWidth > el.clientWidth + 1)
    .map((el) => `${name(el)} shows ${el.clientHeight} of ${el.scrollHeight} px`);
  if (window.flow && document.querySelector("#flow-graph")) out.flow = window.flow.measure();
  return out;
}
