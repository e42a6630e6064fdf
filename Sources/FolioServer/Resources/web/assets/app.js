// Folio's pages. Every form posts to /form with hidden fields naming its API
// route (_api), method (_method), where to go next (_next) and what that page
// confirms (_done, PageRenderer.confirmations), the session's CSRF
// token (_csrf) and, for orders, an idempotency key (_key): that works without
// JavaScript (FormBridge on the server). With JavaScript this module sends the
// same fields to the API as JSON itself and shows the API's problem document
// beside the field it names (errors[].field), else on the form's own line;
// data-done="#id" shows that element instead of visiting _next. Amounts stay
// strings from input to request; names with dots nest (`targets.0.symbol` is
// targets[0].symbol).

const csrfToken = () => document.querySelector('meta[name="csrf-token"]')?.content ?? '';

/** A JSON request to Folio's API; resolves to { ok, status, body }. */
async function api(path, { method = 'GET', body, headers = {} } = {}) {
  const init = { method, credentials: 'same-origin', headers: { Accept: 'application/json', ...headers } };
  if (method !== 'GET' && method !== 'HEAD') init.headers['X-CSRF-Token'] = csrfToken();
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const text = await response.text();
  let parsed = null;
  try { parsed = text ? JSON.parse(text) : null; } catch { parsed = null; }
  return { ok: response.ok, status: response.status, body: parsed };
}

/** The form's fields as the API's JSON: names with dots nest, checkboxes are booleans, `data-integer` digits numbers, `data-list` text a list of words, empty text is left out. */
function fieldsOf(form) {
  const body = {};
  for (const element of form.elements) {
    if (!element.name || element.name.startsWith('_') || element.disabled || element.dataset.skip !== undefined || element.closest('[hidden]')) continue;
    if (element.type === 'radio' && !element.checked) continue;
    // Trimmed, as FormBridge does; a password is sent as typed (a space is part of it).
    let value = element.type === 'checkbox' ? element.checked : /(^|_)password$/.test(element.name) ? element.value : element.value.trim();
    if (value === '') continue;
    if (element.dataset.boolean !== undefined) value = value === 'true';
    if (element.dataset.integer !== undefined && /^\d{1,15}$/.test(value)) value = Number(value);
    // Words separated by commas or spaces, as FormBridge.words splits them.
    if (element.dataset.list !== undefined) value = value.split(/[\s,]+/).filter(Boolean);
    const path = element.name.split('.');
    let target = body;
    for (const key of path.slice(0, -1)) target = target[key] ??= {};
    target[path.at(-1)] = value;
  }
  form.indexMaps = {};
  return arrays(body, '', form.indexMaps);
}

/**
 * Objects whose keys are all indexes (`targets.0.symbol`) become arrays, in
 * index order, without the rows left empty; `maps` remembers each array's
 * original row numbers, so an error about `targets[1]` lands on the row the user sees.
 */
function arrays(value, path, maps) {
  if (value === null || typeof value !== 'object') return value;
  const keys = Object.keys(value);
  if (keys.length && keys.every((key) => /^\d+$/.test(key))) {
    const sorted = keys.sort((a, b) => a - b);
    maps[path] = sorted;
    return sorted.map((key) => arrays(value[key], `${path}[${key}]`, maps));
  }
  for (const key of keys) value[key] = arrays(value[key], path ? `${path}.${key}` : key, maps);
  return value;
}

/** The field an error names, with array positions turned back into the form's row numbers. */
function formField(form, field) {
  return field.replace(/^([\w.]+)\[(\d+)\]/, (whole, path, index) => {
    const rows = form.indexMaps?.[path];
    return rows && rows[Number(index)] !== undefined ? `${path}[${rows[Number(index)]}]` : whole;
  });
}

function clearErrors(form) {
  for (const line of form.querySelectorAll('[data-error-for]')) line.textContent = '';
  for (const input of form.querySelectorAll('[aria-invalid]')) input.removeAttribute('aria-invalid');
}

/** A field edited after a refusal no longer shows the refusal's message, which may not hold for what it says now. */
function forgetError(form, input) {
  if (!(input instanceof Element) || !input.name || input.getAttribute('aria-invalid') !== 'true') return;
  input.removeAttribute('aria-invalid');
  // A row's input is `targets.2.percent`; its message line is for `targets[2].percent`, as the API names it.
  for (const name of new Set([input.name, input.name.replace(/\.(\d+)(?=\.|$)/g, '[$1]')])) {
    const line = form.querySelector(`[data-error-for="${CSS.escape(name)}"]`);
    if (line) line.textContent = '';
  }
}

function mark(form, line, text, field) {
  line.textContent = text;
  // The API names a row as `targets[2].percent`; the form's input is `targets.2.percent`.
  const input = field ? form.elements[field] ?? form.elements[field.replace(/\[(\d+)\]/g, '.$1')] : null;
  // A message read out with its field needs an id to be named by the field's aria-describedby.
  if (!line.id && field) line.id = `${form.id || 'form'}-${field.replace(/[^\w-]/g, '-')}-error`;
  if (input instanceof Element) {
    input.setAttribute('aria-invalid', 'true');
    if (line.id && !(input.getAttribute('aria-describedby') ?? '').includes(line.id)) {
      input.setAttribute('aria-describedby', `${input.getAttribute('aria-describedby') ?? ''} ${line.id}`.trim());
    }
  }
}

// A field's message in a person's words, as the pages without JavaScript say it (Display.issue):
// `limit_price must be …` is `Limit price must be …`; `targets[1].percent …` is `Percent …`, said beside its row.
function readableIssue(field, message) {
  if (!field || !message.startsWith(field)) return message;
  const name = field.split('.').pop().replace(/\[\d+\]/g, '').replaceAll('_', ' ');
  return name.charAt(0).toUpperCase() + name.slice(1) + message.slice(field.length);
}

function showProblem(form, problem) {
  const code = problem?.code ?? '';
  const detail = problem?.detail ?? 'Something went wrong; nothing was changed.';
  // Steps that wait for this answer, such as the sign-in's second factor.
  for (const step of form.querySelectorAll('[data-show-on]')) {
    if (step.dataset.showOn.split(' ').includes(code)) step.hidden = false;
  }
  let shown = false;
  const issues = problem?.errors ?? [];
  // A refusal's detail names its figures ("You can sell at most 45 SPY."): said beside the one field it is
  // about, as the page without JavaScript shows both. A validation summary would only repeat the field's message.
  // A message that already names its figures ("exceeds the available cash of $1,250.50") is not followed by a detail that repeats it in words.
  const figures = issues.length === 1 && code !== 'validation_failed' && detail !== issues[0].message && !/\d/.test(issues[0].message) ? ` ${detail}` : '';
  for (const issue of issues) {
    const field = formField(form, issue.field);
    // An item of a list field (`excluded_symbols[1]`) is said beside the list's one input.
    const line = form.querySelector(`[data-error-for="${CSS.escape(field)}"]`) ?? form.querySelector(`[data-error-for="${CSS.escape(field.replace(/\[\d+\]$/, ''))}"]`);
    if (line && !line.closest('[hidden]')) { mark(form, line, readableIssue(issue.field, issue.message) + figures, line.dataset.errorFor); shown = true; }
  }
  if (!shown) {
    // Of the lines that take the code, the one whose field was filled in (a wrong recovery code is not the app's code).
    const lines = [...form.querySelectorAll('[data-codes]')]
      .filter((candidate) => candidate.dataset.codes.split(' ').includes(code) && !candidate.closest('[hidden]'));
    const filled = (candidate) => { const input = form.elements[candidate.dataset.errorFor]; return input instanceof HTMLInputElement && input.value.trim() !== ''; };
    const line = lines.find(filled) ?? lines[0];
    if (line) { mark(form, line, detail, line.dataset.errorFor); shown = true; }
  }
  if (!shown || (problem?.errors ?? []).length === 0) {
    const line = form.querySelector('[data-error-for=""]');
    if (line && !shown) line.textContent = detail;
  }
  (form.querySelector('[aria-invalid="true"]') ?? form.querySelector('[data-show-on]:not([hidden]) input'))?.focus();
}

/** A session that ended, or a page older than the session, said as what to do (FormBridge.advice says the same without JavaScript). */
function advised(problem) {
  const advice = {
    unauthorized: 'Nothing was changed: your session has ended. Sign in again (in another tab, to keep what you typed here), then send the form again.',
    csrf_failed: 'Nothing was changed: this page is older than your session. Reload the page, then send the form again.',
  }[problem?.code];
  // A page opened at another address than Folio's own: its own message says where to go, and reloading would not help.
  if (problem?.code === 'csrf_failed' && (problem.errors ?? []).some((issue) => issue.field === 'Origin')) {
    return { ...problem, detail: problem.errors.find((issue) => issue.field === 'Origin').message };
  }
  if (advice) return { ...problem, detail: advice };
  // The order moved on since the page was drawn (filled or canceled in another tab, say).
  if (problem?.code === 'order_not_cancelable') return { ...problem, detail: `${problem.detail} Reload the page to see it as it is now.` };
  return problem;
}

/**
 * Sign-out from a tab whose page is older than the browser's session (signed out and in again in another
 * tab): the session the cookie names now is ended all the same, with its own token read afresh. Ending a
 * session is safe to repeat, unlike any other form. True when the browser is signed out.
 */
async function signOutAnyway(form, result) {
  if (result.status === 401) { goNext(form); return true; }
  if (result.body?.code !== 'csrf_failed') return false;
  const fresh = await api('/api/auth/csrf');
  const token = fresh.body?.csrf_token;
  if (!fresh.ok || !token) { goNext(form); return true; }
  const again = await fetch('/api/auth/logout', { method: 'POST', credentials: 'same-origin', headers: { Accept: 'application/json', 'X-CSRF-Token': token } });
  if (!again.ok && again.status !== 401) return false;
  goNext(form);
  return true;
}

/** The confirmation an answer earns, as PageRenderer.settled says it: a cancel done at once (200, not 202
 * pending_cancel) is said to be done, not asked for. */
function settled(code, result) {
  if (code === 'cancel_asked' && result.status === 200 && result.body?.status !== 'pending_cancel') return 'canceled';
  if (code === 'cancel_all_asked' && Array.isArray(result.body?.data) && result.body.data.every((order) => order.status !== 'pending_cancel')) return 'canceled_all';
  return code;
}

/** Visits the form's _next page, which says what was done (PageRenderer.confirmations), once, as after FormBridge's
 * redirect: the cookie names that page (PageRenderer.confirmationPath: its path and account), so another tab's page does not. */
function goNext(form, result) {
  if (form.elements._done) {
    const next = new URL(form.elements._next.value, window.location.origin);
    const account = next.searchParams.get('account_id');
    const page = (/^\/[A-Za-z0-9\/_.-]*$/.test(next.pathname) ? next.pathname : '/')
      + (account && /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/.test(account) ? `?account_id=${account.toLowerCase()}` : '');
    const code = result ? settled(form.elements._done.value, result) : form.elements._done.value;
    document.cookie = `__Host-folio_done=${encodeURIComponent(code)}:${page}; Path=/; Max-Age=60; Secure; SameSite=Strict`;
  }
  window.location.assign(form.elements._next.value);
}

async function submit(event) {
  const form = event.currentTarget;
  event.preventDefault();
  clearErrors(form);
  // What the last form did is old news once another is sent.
  document.getElementById('confirmation')?.remove();
  const button = form.querySelector('button[type="submit"]');
  if (button) button.disabled = true;
  try {
    const method = form.elements._method?.value ?? 'POST';
    const headers = {};
    // One key per attempt; kept only when the last attempt never got an answer, so a retry cannot place twice.
    if (form.elements._key) headers['Idempotency-Key'] = form.dataset.pendingKey ??= crypto.randomUUID();
    const fields = fieldsOf(form);
    // A DELETE carries a body only when its form has fields (erasure asks for the password).
    const body = method === 'DELETE' && Object.keys(fields).length === 0 ? undefined : fields;
    const result = await api(form.elements._api.value, { method, headers, body });
    // The key is spent once the answer is final: a success, or a refusal that a retry would get again.
    // A 408, 409 (the same key still in progress), 425, 429 or 5xx may hide a request that went through: keep it.
    if (result.ok || (result.status >= 400 && result.status < 500 && ![408, 409, 425, 429].includes(result.status))) delete form.dataset.pendingKey;
    if (!result.ok && form.elements._api.value === '/api/auth/logout' && await signOutAnyway(form, result)) return;
    if (!result.ok) { showProblem(form, advised(result.body ?? { detail: `Folio answered ${result.status}.` })); return; }
    form.dispatchEvent(new CustomEvent('folio:done', { detail: result.body }));
    const done = form.dataset.done && document.querySelector(form.dataset.done);
    if (done) {
      // A note inside the form (preferences' "Saved.") keeps the form on screen; a next step replaces it.
      if (!form.contains(done)) form.hidden = true;
      done.hidden = false;
      done.setAttribute('tabindex', '-1');
      done.focus();
    } else if (form.elements._next) {
      goNext(form, result);
    }
  } catch {
    showProblem(form, { detail: 'Folio could not be reached; check the connection and try again.' });
  } finally {
    if (button) button.disabled = false;
  }
}

/** The password rules, ticked off as the user types (the server checks them again, and the common-password list). */
function watchPolicy(list) {
  const form = list.closest('form');
  const input = form?.elements[list.dataset.policyFor];
  if (!(input instanceof HTMLInputElement)) return;
  const minimum = Number(list.dataset.minimum), maximum = Number(list.dataset.maximum);
  const update = () => {
    const value = input.value, length = [...value].length;
    const email = (list.dataset.email || form.elements.email?.value || '').toLowerCase();
    const local = email.split('@')[0] ?? '';
    const rules = {
      minimum: length >= minimum,
      maximum: length <= maximum,
      email: !(local.length >= 3 && value.toLowerCase().includes(local)),
    };
    for (const item of list.querySelectorAll('[data-rule]')) {
      item.classList.toggle('met', value !== '' && rules[item.dataset.rule]);
      item.classList.toggle('unmet', value !== '' && !rules[item.dataset.rule]);
    }
  };
  input.addEventListener('input', update);
  form.elements.email?.addEventListener?.('input', update);
}

document.documentElement.classList.add('js');
// Steps that wait for an answer (the second factor) are shown at once without JavaScript, on demand with it.
for (const step of document.querySelectorAll('[data-show-on]')) step.hidden = true;
// A page made from an API answer (FormBridge's `_show`) posts its forms as they are: data-native.
for (const form of document.querySelectorAll('form[action="/form"]:not([data-native])')) {
  form.addEventListener('submit', submit);
  // Changed fields are a new request: they get a new idempotency key.
  form.addEventListener('input', (event) => {
    delete form.dataset.pendingKey;
    forgetError(form, event.target);
  });
}
for (const list of document.querySelectorAll('.policy[data-policy-for]')) watchPolicy(list);
localTimes(document.querySelector('main') ?? document.body);
// Days a filter names are the reader's days, as the times on the page are shown in the reader's zone.
for (const field of document.querySelectorAll('input[data-browser-zone]')) {
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  if (!field.value && zone && zone !== 'UTC' && zone !== 'Etc/UTC') field.value = zone;
}

// The server writes moments in UTC ("2026-12-03 21:05 UTC"), so a page reads
// the same without JavaScript; here each is shown in the reader's own time
// zone, in the same shape, as a <time> whose title keeps the UTC original.
function localTimes(root) {
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  if (!root || !zone || zone === 'UTC' || zone === 'Etc/UTC') return;
  const shape = new Intl.DateTimeFormat('en-US', {
    timeZone: zone, year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit',
    hourCycle: 'h23', timeZoneName: 'short',
  });
  const local = (date) => {
    const part = Object.fromEntries(shape.formatToParts(date).map(({ type, value }) => [type, value]));
    return `${part.year}-${part.month}-${part.day} ${part.hour}:${part.minute} ${part.timeZoneName}`;
  };
  const moment = /(\d{4})-(\d{2})-(\d{2}) (\d{2}):(\d{2}) UTC\b/g;
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
  const found = [];
  while (walker.nextNode()) {
    if (walker.currentNode.parentElement?.closest('time, textarea, script, style')) continue;
    moment.lastIndex = 0;
    if (moment.test(walker.currentNode.nodeValue)) found.push(walker.currentNode);
  }
  for (const node of found) {
    const text = node.nodeValue;
    const pieces = document.createDocumentFragment();
    let from = 0;
    for (const match of text.matchAll(moment)) {
      const [written, year, month, day, hour, minute] = match;
      const date = new Date(Date.UTC(+year, +month - 1, +day, +hour, +minute));
      pieces.append(text.slice(from, match.index));
      const time = document.createElement('time');
      time.dateTime = date.toISOString().replace(':00.000Z', 'Z');
      time.title = written;
      time.textContent = local(date);
      pieces.append(time);
      from = match.index + written.length;
    }
    pieces.append(text.slice(from));
    node.replaceWith(pieces);
  }
}

// The grammar Folio parses amounts with: digits, an optional fraction and an
// optional exponent ("2.5e3"). An exponent past what any amount can hold reads
// as nothing (zero aside, which any exponent leaves zero).
function decimal(text) {
  const match = /^\s*(-?)(\d+)(?:\.(\d+))?(?:[eE]([+-]?\d+))?\s*$/.exec(text ?? '');
  if (!match) return null;
  const fraction = match[3] ?? '';
  const exponent = Number(match[4] ?? '0');
  let units = BigInt(match[2] + fraction);
  if (units === 0n) return { units, scale: 0 };
  if (Math.abs(exponent) > 64) return null;
  let scale = fraction.length - exponent;
  if (scale < 0) { units *= 10n ** BigInt(-scale); scale = 0; }
  // Trailing zeros are no places: "1.50" has two, as Folio counts them.
  while (scale > 0 && units % 10n === 0n) { units /= 10n; scale -= 1; }
  return { units: match[1] ? -units : units, scale };
}

// An amount as the API writes it ("1019.06", "0.1234"): its places kept, its dollars grouped ("$1,019.06").
function dollars(text) {
  const [whole, fraction] = String(text).split('.');
  return `$${whole.replace(/\B(?=(\d{3})+(?!\d))/g, ',')}${fraction === undefined ? '' : '.' + fraction}`;
}

globalThis.folio = { api, decimal, dollars };
