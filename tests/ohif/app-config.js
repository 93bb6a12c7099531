/** OHIF configuration for testing against beeldbrug. */
// run.mjs serves this file as /app-config.js, with __DICOMWEB_ROOT__ replaced by the
// gateway's DICOMweb base URL (e.g. http://127.0.0.1:8080/dicomweb). No authentication.
window.config = {
  name: 'beeldbrug',
  routerBasename: null,
  extensions: [],
  modes: [],
  customizationService: {},
  showStudyList: true,
  maxNumberOfWebWorkers: 2,
  // The test serves OHIF without cross-origin isolation and may fall back to CPU rendering:
  // neither warning dialog should cover the viewport.
  showWarningMessageForCrossOrigin: false,
  showCPUFallbackMessage: false,
  showLoadingIndicator: true,
  strictZSpacingForVolumeViewport: true,
  groupEnabledModesFirst: true,
  maxNumRequests: { interaction: 100, thumbnail: 5, prefetch: 10 },
  showErrorDetails: 'always',
  investigationalUseDialog: { option: 'never' },
  defaultDataSourceName: 'beeldbrug',
  dataSources: [
    {
      namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
      sourceName: 'beeldbrug',
      configuration: {
        friendlyName: 'beeldbrug DICOMweb',
        name: 'beeldbrug',
        qidoRoot: '__DICOMWEB_ROOT__',
        wadoRoot: '__DICOMWEB_ROOT__',
        wadoUriRoot: '__DICOMWEB_ROOT__',
        qidoSupportsIncludeField: true,
        supportsReject: false,
        imageRendering: 'wadors',
        // series thumbnails from WADO-RS .../instances/{uid}/thumbnail (image/jpeg)
        thumbnailRendering: 'thumbnail',
        thumbnailRequestStrategy: 'fetch',
        enableStudyLazyLoad: true,
        supportsFuzzyMatching: false,
        supportsWildcard: true,
        staticWado: false,
        singlepart: false,
        bulkDataURI: { enabled: true },
        // frames are asked for with the quoted Accept form, dicomweb-client's default:
        // multipart/related; type="application/octet-stream"; transfer-syntax="*"
        // (true sends the same without quotes; beeldbrug answers both)
        omitQuotationForMultipartRequest: false,
      },
    },
  ],
};
