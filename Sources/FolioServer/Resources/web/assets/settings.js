// Settings: two-factor enrolment shows the QR code, the secret and the otpauth link, then the recovery codes;
// new recovery codes are shown where their form was.
const enrol = document.getElementById('enrol');
enrol?.addEventListener('folio:done', (event) => {
  // The server draws the code as an SVG image; parsed as XML, so nothing in it runs.
  const drawn = event.detail.qr_code_svg && new DOMParser().parseFromString(event.detail.qr_code_svg, 'image/svg+xml').documentElement;
  if (drawn && drawn.localName === 'svg') document.getElementById('totp-qr').replaceChildren(document.importNode(drawn, true));
  document.getElementById('totp-secret').textContent = event.detail.secret;
  const link = document.getElementById('totp-uri');
  link.href = event.detail.otpauth_uri;
  link.textContent = event.detail.otpauth_uri;
});
function listCodes(list, codes) {
  list.replaceChildren(...codes.map((code) => {
    const item = document.createElement('li');
    item.textContent = code;
    return item;
  }));
}
document.getElementById('confirm-enrolment')?.addEventListener('folio:done', (event) => {
  document.getElementById('enrolment').hidden = true;
  listCodes(document.getElementById('recovery-codes'), event.detail.recovery_codes);
  // The page above the codes says what is now true: on, and every other session ended.
  const badge = document.createElement('span');
  badge.className = 'badge ok';
  badge.textContent = 'On';
  document.getElementById('two-factor-state').replaceChildren(badge, ' Signing in needs a code from your authenticator app.');
  for (const row of document.querySelectorAll('#sessions tbody tr:not([data-current])')) row.remove();
  // Erasing the account now asks for a code too.
  document.getElementById('erase-second-factor').hidden = false;
});
// New recovery codes: shown in place of the form, which is spent (the old count and codes no longer hold).
document.getElementById('replace-recovery')?.addEventListener('folio:done', (event) => {
  event.target.closest('details').hidden = true;
  document.getElementById('recovery-left').hidden = true;
  listCodes(document.getElementById('new-recovery-codes'), event.detail.recovery_codes);
});
