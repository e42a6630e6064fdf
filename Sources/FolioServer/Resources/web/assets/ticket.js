// The order ticket: a live quote for the symbol, and the estimated cost or
// proceeds computed exactly (decimal strings in BigInt cents, rounded up for
// buys and down for sells, as Folio fills), against the buying power.
const form = document.getElementById('ticket');
const quoteLine = document.getElementById('quote');
const estimate = document.getElementById('estimate');
let quote = null;
let pending = 0;

const { decimal } = globalThis.folio;

// What Folio refuses estimates nothing: a quantity finer than 9 places, a price finer than a cent from
// $1.00 up (sub-penny) or than 8 places below, and either above its limit of 1,000,000,000.
function refused(value, kind) {
  const one = 10n ** BigInt(value.scale);
  if (value.units > 1000000000n * one) return true;
  if (kind === 'quantity') return value.scale > 9;
  return value.scale > (value.units >= one ? 2 : 8);
}

function cents(a, b, roundUp) {
  const units = a.units * b.units, scale = a.scale + b.scale;
  if (scale <= 2) return units * 10n ** BigInt(2 - scale);
  const divisor = 10n ** BigInt(scale - 2);
  const whole = units / divisor;
  return roundUp && units % divisor > 0n ? whole + 1n : whole;
}

/**
 * What a buy sets aside, in cents, as Folio works it out (TradingRules.buyReservation): a market or stop buy
 * reserves quantity × max(quote, stop) × (1 + margin), the price and factor rounded up at 14 places, then the
 * whole up to the cent; a limit buy its quantity at the limit.
 */
function reservation(type, quantity, price, stop, margin) {
  if (type !== 'MARKET' && type !== 'STOP') return cents(quantity, price, true);
  const base = stop && stop.units * 10n ** BigInt(Math.max(price.scale - stop.scale, 0)) > price.units * 10n ** BigInt(Math.max(stop.scale - price.scale, 0)) ? stop : price;
  const factor = { units: 10n ** BigInt(margin.scale) + margin.units, scale: margin.scale };
  let units = base.units * factor.units, scale = base.scale + factor.scale;
  if (scale > 14) {
    const divisor = 10n ** BigInt(scale - 14);
    units = units / divisor + (units % divisor > 0n ? 1n : 0n);
    scale = 14;
  }
  return cents(quantity, { units, scale }, true);
}

function dollars(value) {
  const sign = value < 0n ? '-' : '';
  const text = (value < 0n ? -value : value).toString().padStart(3, '0');
  return `${sign}$${text.slice(0, -2).replace(/\B(?=(\d{3})+(?!\d))/g, ',')}.${text.slice(-2)}`;
}

// Fields that only some orders take (a limit price, a stop price, a market buy's amount) are shown for those;
// app.js leaves hidden fields out of the request.
function showTypeFields() {
  const type = form.elements.order_type.value, side = form.elements.side.value;
  for (const group of form.querySelectorAll('[data-for-types]')) {
    group.hidden = !group.dataset.forTypes.split(' ').includes(type) || (group.dataset.forSides !== undefined && !group.dataset.forSides.split(' ').includes(side));
  }
}

// A market buy of an amount: it costs that amount, and buys about amount ÷ price shares (shown to 4 places, down).
function notionalEstimate(text) {
  const amount = decimal(text);
  if (form.elements.quantity.value.trim() !== '') return 'Give a quantity or an amount, not both.';
  if (!amount || amount.units <= 0n || amount.scale > 2 || amount.units > 1000000000n * 10n ** BigInt(amount.scale)) return '—';
  const cost = cents(amount, { units: 1n, scale: 0 }, false);
  const price = decimal(quote?.price);
  let shares = '';
  if (price && price.units > 0n) {
    // amount ÷ price to 4 places: (amount units × 10^(4 + price scale)) ÷ (price units × 10^amount scale).
    const tenThousandths = (amount.units * 10n ** BigInt(4 + price.scale)) / (price.units * 10n ** BigInt(amount.scale));
    const whole = tenThousandths / 10000n, fraction = (tenThousandths % 10000n).toString().padStart(4, '0');
    shares = ` for about ${whole}.${fraction} shares`;
  }
  const power = decimal(document.getElementById('buying-power').dataset.amount);
  const over = power && cost > cents(power, { units: 1n, scale: 0 }, false);
  return dollars(cost) + shares + (over ? ' (more than your buying power)' : '');
}

function update() {
  const buying = form.elements.side.value !== 'SELL';
  document.getElementById('estimate-kind').textContent = buying ? 'cost' : 'proceeds';
  const type = form.elements.order_type.value;
  const amount = form.elements.notional;
  if (buying && type === 'MARKET' && amount.value.trim() !== '') {
    estimate.textContent = notionalEstimate(amount.value);
    return;
  }
  // A typed limit or stop price is checked as Folio checks it; a market order is estimated at the quote as it comes.
  const typed = type === 'LIMIT' || type === 'STOP_LIMIT' ? form.elements.limit_price.value : type === 'STOP' ? form.elements.stop_price.value : null;
  const price = decimal(typed ?? quote?.price);
  const quantity = decimal(form.elements.quantity.value);
  // A stop-limit's stop price is checked too, though the estimate is at its limit.
  const stop = type === 'STOP_LIMIT' ? decimal(form.elements.stop_price.value) : null;
  const stopRefused = type === 'STOP_LIMIT' && (!stop || stop.units <= 0n || refused(stop, 'price'));
  // Folio refuses a quantity or price of zero or less, or finer than it keeps: nothing to estimate.
  if (!price || !quantity || price.units <= 0n || quantity.units <= 0n || (typed !== null && refused(price, 'price')) || refused(quantity, 'quantity') || stopRefused) {
    estimate.textContent = '—';
    return;
  }
  const total = cents(quantity, price, buying);
  const shown = document.getElementById('buying-power');
  const power = decimal(shown.dataset.amount), margin = decimal(shown.dataset.margin) ?? { units: 0n, scale: 0 };
  // The warning weighs what the order would set aside, which for a market or stop buy is above its cost.
  const quoted = decimal(quote?.price);
  const reserve = buying ? reservation(type, quantity, type === 'STOP' ? (quoted ?? price) : price, type === 'STOP' ? price : null, margin) : 0n;
  const over = buying && power && reserve > cents(power, { units: 1n, scale: 0 }, false);
  const held = over && reserve !== total ? `; it sets aside ${dollars(reserve)}, more than your buying power` : ' (more than your buying power)';
  estimate.textContent = dollars(total) + (over ? held : '');
}

async function fetchQuote() {
  const symbol = form.elements.symbol.value.trim().toUpperCase();
  quote = null;
  update();
  if (!symbol) { quoteLine.textContent = 'Enter a symbol for a live quote.'; return; }
  const ticket = ++pending;
  quoteLine.textContent = `Looking up ${symbol}…`;
  const result = await globalThis.folio.api(`/api/market/quotes?symbols=${encodeURIComponent(symbol)}`);
  if (ticket !== pending) return;
  const found = result.body?.data?.find((item) => item.symbol === symbol);
  if (result.ok && found) {
    quote = found;
    quoteLine.textContent = `${symbol} ${globalThis.folio.dollars(found.price)} · ${found.stale ? 'stale price' : 'live'}`;
  } else {
    const error = result.body?.errors?.find((item) => item.symbol === symbol);
    quoteLine.textContent = error?.detail ?? result.body?.detail ?? `No quote for ${symbol}.`;
  }
  update();
}

let timer;
// An account that takes no orders (an unlinked Alpaca account) has no ticket.
if (form) {
  form.elements.symbol.addEventListener('input', () => { clearTimeout(timer); timer = setTimeout(fetchQuote, 350); });
  form.elements.order_type.addEventListener('change', () => { showTypeFields(); update(); });
  for (const name of ['quantity', 'notional', 'limit_price', 'stop_price']) form.elements[name].addEventListener('input', update);
  for (const radio of form.querySelectorAll('input[name="side"]')) radio.addEventListener('change', () => { showTypeFields(); update(); });
  showTypeFields();
}
