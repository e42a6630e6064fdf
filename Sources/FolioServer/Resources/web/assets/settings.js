// Settings: two-factor enrolment shows the QR code, the secret and the otpauth link, then the recovery codes.
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
document.getElementById('confirm-enrolment')?.addEventListener('folio:done', (event) => {
  document.getElementById('enrolment').hidden = true;
  const list = document.getElementById('recovery-codes');
  for (const code of event.detail.recovery_codes) {
    const item = document.createElement('li');
    item.textContent = code;
    list.append(item);
  }
});
