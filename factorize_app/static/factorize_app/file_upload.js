// The browsable API's file fields: a chosen file is uploaded (POST /files, multipart) and the
// upload's id put in the field, so the form still sends the JSON-shaped input task endpoints take.
// Optional fields still holding the example's value are cleared (an input takes one or the other).
(function () {
  "use strict";
  if (window.factorizeFileUploads) return; // one listener, however many file fields the page has
  window.factorizeFileUploads = true;

  function csrfHeaders() {
    const element = document.getElementById("drf_csrf");
    try {
      const csrf = JSON.parse(element.textContent);
      return csrf.csrfToken ? { [csrf.csrfHeaderName]: csrf.csrfToken } : {};
    } catch (error) {
      return {};
    }
  }

  async function upload(chooser) {
    const form = chooser.form;
    const name = chooser.dataset.uploadFor;
    const target = form.querySelector(`[name="${name}"]`);
    const status = form.querySelector(`[data-upload-status="${name}"]`);
    const body = new FormData();
    body.append("file", chooser.files[0]);
    status.textContent = "Uploading…";
    try {
      const response = await fetch(chooser.dataset.uploadUrl, {
        method: "POST",
        body,
        credentials: "same-origin",
        headers: { Accept: "application/json", ...csrfHeaders() },
      });
      const answer = await response.json().catch(() => ({}));
      if (!response.ok || !answer.id) {
        status.textContent = `Upload refused (${response.status}): ${answer.detail || JSON.stringify(answer)}`;
        return;
      }
      target.value = answer.id;
      for (const other of (chooser.dataset.exampleFields || "").split(" ").filter(Boolean)) {
        const field = form.querySelector(`[name="${other}"]`);
        if (field && field.value === field.defaultValue) field.value = "";
      }
      status.textContent = `Uploaded ${answer.name || "the file"} (${answer.size} bytes) as ${answer.id}.`;
    } catch (error) {
      status.textContent = `Upload failed: ${error}`;
    }
  }

  document.addEventListener("change", (event) => {
    const chooser = event.target;
    if (chooser.matches("input[type=file][data-upload-for]") && chooser.files.length) upload(chooser);
  });
})();
