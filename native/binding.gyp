# node-tss: N-API binding of the tpm2-tss ESAPI (see native/README.md).
# Build: node_modules/.bin/node-gyp rebuild --directory native   (needs libtss2-dev, pkg-config)
{
  "targets": [
    {
      "target_name": "node_tss",
      "sources": ["src/tpm.cc", "src/deadline-tcti.cc", "src/file-lock.cc"],
      "dependencies": [
        "<!(node -p \"require('node-addon-api').targets\"):node_addon_api_except"
      ],
      "cflags_cc": ["-std=c++17", "-Wall", "-Wextra", "<!@(pkg-config --cflags tss2-esys tss2-tctildr tss2-mu tss2-rc)"],
      "libraries": ["<!@(pkg-config --libs tss2-esys tss2-tctildr tss2-mu tss2-rc)"],
      "defines": ["NAPI_VERSION=8"]
    }
  ]
}
