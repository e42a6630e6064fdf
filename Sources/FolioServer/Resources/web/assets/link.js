// Plaid Link: a link token from Folio, Plaid's own window, then the public
// token back to Folio (or, for a re-link, word that the login is fixed).
for (const form of document.querySelectorAll('form[data-plaid-link]')) {
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const line = form.querySelector('[data-error-for=""]');
    line.textContent = '';
    const item = form.dataset.item;
    const token = await globalThis.folio.api('/api/links/plaid/link-token', { method: 'POST', body: item ? { item_id: item } : {} });
    if (!token.ok) { line.textContent = token.body?.detail ?? 'Plaid could not be reached.'; return; }
    if (!globalThis.Plaid) { line.textContent = "Plaid Link's script did not load."; return; }
    globalThis.Plaid.create({
      token: token.body.link_token,
      onSuccess: async (publicToken) => {
        const done = item
          ? await globalThis.folio.api(`/api/links/${item}/relinked`, { method: 'POST', body: {} })
          : await globalThis.folio.api('/api/links/plaid/exchange', { method: 'POST', body: { public_token: publicToken } });
        if (done.ok) window.location.reload(); else line.textContent = done.body?.detail ?? 'Linking failed.';
      },
      onExit: (error) => { if (error) line.textContent = error.display_message ?? error.error_message ?? 'Linking stopped.'; },
    }).open();
  });
}
