// triggerd: starts Swagger UI on the OpenAPI document of this server. Loaded from
// /api/docs with a strict Content-Security-Policy: nothing is fetched from elsewhere.
window.addEventListener("load", function () {
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.getAttribute("data-spec-url"),
    domNode: root,
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    validatorUrl: null,          // no badge from validator.swagger.io
    queryConfigEnabled: false,   // ?url= / ?configUrl= cannot load another document
    tryItOutEnabled: false,
    persistAuthorization: false
  });
});
