// Targets: the running sum of the weights (exact, in BigInt millionths),
// spare rows on demand, the plan preview, and following a run as it goes.
const form = document.getElementById('targets');
const sum = document.getElementById('weight-sum');
const note = document.getElementById('weight-sum-note');

// A weight in millionths of a percent, read as Folio reads amounts ("2.5e1" is 25, app.js's decimal), or
// why Folio would refuse it, in the words its own answer uses.
function millionths(text) {
  const value = globalThis.folio.decimal(text);
  if (!value) return { refused: 'a weight is not a number' };
  if (value.units < 0n) return { refused: 'a weight is below 0' };
  if (value.scale > 4) return { refused: 'a weight has more than 4 decimal places' };
  return { value: value.units * 10n ** BigInt(6 - value.scale) };
}

function percentText(value) {
  const whole = value / 1000000n, fraction = (value % 1000000n).toString().padStart(6, '0').replace(/0+$/, '');
  return `${whole}${fraction ? '.' + fraction : ''}%`;
}

function updateSum() {
  let total = 0n, refused = null;
  for (const input of form.querySelectorAll('[data-weight]')) {
    if (!input.value.trim()) continue;
    const weight = millionths(input.value);
    if (weight.refused) refused ??= weight.refused; else total += weight.value;
  }
  sum.textContent = percentText(total);
  note.textContent = refused ?? (total === 100000000n ? 'adds up' : `must add up to 100% (${total > 100000000n ? 'over' : 'under'})`);
  sum.classList.toggle('down', refused !== null || total !== 100000000n);
}

form?.addEventListener('input', updateSum);
if (form) updateSum();

document.getElementById('add-row')?.addEventListener('click', () => {
  const rows = document.getElementById('weight-rows');
  const index = rows.children.length;
  const row = rows.lastElementChild.cloneNode(true);
  for (const element of row.querySelectorAll('[id], [for], [name], [data-error-for]')) {
    for (const attribute of ['id', 'for', 'name', 'data-error-for']) {
      const value = element.getAttribute(attribute);
      if (value) element.setAttribute(attribute, value.replace(/\d+/, String(index)));
    }
    if (element.tagName === 'INPUT') { element.value = ''; element.removeAttribute('aria-invalid'); element.removeAttribute('aria-describedby'); }
    if (element.classList.contains('field-error')) element.textContent = '';
    if (element.tagName === 'LABEL') element.textContent = element.textContent.replace(/\d+/, String(index + 1));
  }
  rows.append(row);
  row.querySelector('input').focus();
});

const money = (text) => globalThis.folio.dollars(text);

document.getElementById('plan-form')?.addEventListener('folio:done', (event) => {
  const plan = event.detail;
  // A run still going holds the cash: its note is said and no trades are offered (as AnswerPages.plan).
  if (plan.active_run_id) plan.trades = [];
  const trades = document.getElementById('plan-trades');
  trades.replaceChildren();
  for (const trade of plan.trades) {
    const row = trades.insertRow();
    row.insertCell().textContent = `${trade.side.toLowerCase()} ${trade.quantity} ${trade.symbol}`;
    row.insertCell().textContent = money(trade.price);
    row.insertCell().textContent = money(trade.estimated_amount);
    for (const cell of [...row.cells].slice(1)) cell.className = 'num';
  }
  // Said as AnswerPages.rebalancePlan says it without JavaScript.
  const summary = plan.active_run_id
    ? plan.notes.join(' ')
    : plan.trades.length
    ? `${plan.order_count} ${plan.order_count === 1 ? 'order' : 'orders'}: about ${money(plan.estimated_cost)} to buy and ${money(plan.estimated_proceeds)} from sales; cash after ${money(plan.cash_after)}.`
      + (plan.notes?.length ? ' ' + plan.notes.join(' ') : '')
    : plan.reason?.message ?? 'Nothing to trade: the holdings are where the targets put them.';
  document.getElementById('plan-summary').textContent = summary;
  const fields = new FormData(document.getElementById('plan-form'));
  document.getElementById('execute-mode').value = fields.get('mode') ?? '';
  document.getElementById('execute-cash-reserve').value = fields.get('cash_reserve') ?? '';
  document.getElementById('execute-min-trade').value = fields.get('min_trade_amount') ?? '';
  document.getElementById('execute-excluded').value = fields.get('excluded_symbols') ?? '';
  // The run is refused (409 plan_changed) if it would not be this plan: the targets changed, or prices moved its cost.
  document.getElementById('execute-targets-version').value = String(plan.targets_version);
  document.getElementById('execute-previewed-cost').value = plan.estimated_cost;
  document.getElementById('execute-form').hidden = plan.trades.length === 0;
  document.getElementById('plan-table').hidden = plan.trades.length === 0;
  const section = document.getElementById('plan');
  section.hidden = false;
  section.setAttribute('tabindex', '-1');
  section.focus();
});

// A plan on screen describes the form as it was previewed: once the form changes (or its new preview is
// refused), the plan and its "Place these orders" go, so no one places orders the form no longer asks for.
document.getElementById('plan-form')?.addEventListener('input', () => {
  const section = document.getElementById('plan');
  if (section) section.hidden = true;
});

// A run in progress: its status and orders, every two seconds, until it finishes; then the page is drawn
// again for the drift it left, unless something was typed meanwhile (a reload would lose it: it says so instead).
const following = document.querySelector('[data-follow]');
let typed = false;
for (const form of document.querySelectorAll('form')) form.addEventListener('input', () => { typed = true; });
async function follow() {
  let result;
  try { result = await globalThis.folio.api(following.dataset.follow); } catch { result = { ok: false }; }
  if (!result.ok) { setTimeout(follow, 5000); return; }
  const run = result.body;
  const row = following.querySelector(`[data-run="${CSS.escape(run.id)}"]`);
  if (row) row.querySelector('.run-status').textContent = run.status.replace('_', ' ');
  if (!['done', 'partially_done', 'failed'].includes(run.status)) { setTimeout(follow, 2000); return; }
  if (!typed) { window.location.reload(); return; }
  const note = document.createElement('p');
  note.className = 'muted';
  note.setAttribute('role', 'status');
  note.textContent = 'The run finished: reload the page to see where it left the holdings (what you typed here is not saved yet).';
  following.append(note);
}
if (following) setTimeout(follow, 2000);
