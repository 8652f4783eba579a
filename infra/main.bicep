// Azure resources for the MLOps function app: a Flex Consumption app (Python 3.11) whose system-assigned
// identity reaches storage, Key Vault and Application Insights without any key or connection string;
// an Event Grid system topic on the storage account (its subscription to the `prepare` function is
// infra/eventgrid.bicep, deployed after the code). Deploy: infra/README.md (the workflow
// .github/workflows/deploy.yml runs every step).
//
// Follows:
//   Flex Consumption resources  https://learn.microsoft.com/azure/azure-functions/functions-infrastructure-as-code?pivots=flex-consumption-plan
//                               https://github.com/Azure-Samples/azure-functions-flex-consumption-samples/tree/main/IaC/bicep
//   host storage by identity    https://learn.microsoft.com/azure/azure-functions/functions-reference#connecting-to-host-storage-with-an-identity
//   blob trigger (Event Grid)   https://learn.microsoft.com/azure/azure-functions/functions-event-grid-blob-trigger
//                               https://github.com/Azure-Samples/functions-quickstart-python-azd-eventgrid-blob
//   Key Vault references        https://learn.microsoft.com/azure/app-service/app-service-key-vault-references
//   App Insights, Entra auth    https://learn.microsoft.com/azure/azure-monitor/app/azure-ad-authentication
targetScope = 'resourceGroup'

@description('Short name used to derive resource names: 3-18 lowercase letters and digits.')
@minLength(3)
@maxLength(18)
param name string = 'mlops${uniqueString(resourceGroup().id)}'
param location string = resourceGroup().location

@description('Branch whose pushes retrain models (MLOPS_GIT_BRANCH).')
param gitBranch string = 'main'
@description('Where specs are read from on a push (MLOPS_GIT_SOURCE).')
@allowed(['github', 'azure-devops'])
param gitSource string = 'github'
@description('owner/name of the GitHub repository holding the specs (MLOPS_GITHUB_REPOSITORY); empty: not set.')
param githubRepository string = ''
@description('Folder of the specs in that repository (MLOPS_GIT_SPECS_FOLDER).')
param gitSpecsFolder string = 'specs'
@description('Azure DevOps organization URL, project and repository (MLOPS_ADO_*); empty: not set.')
param adoOrgUrl string = ''
param adoProject string = ''
param adoRepository string = ''
@description('Shown by GET /api/health/details (MLOPS_APP_VERSION), e.g. the commit; empty: the package version.')
param appVersion string = ''

@description('''Key Vault secrets that exist (written by the deploy workflow or by hand): the app gets a
Key Vault reference only for these, so an optional secret that was never written (github-token for a
public repository) leaves its setting unset instead of an unresolvable reference. Known names:
github-webhook-secret, github-token, ado-pat, ado-webhook-secret.''')
param keyVaultSecrets array = []
@description('Object id of the identity that writes the secrets (the deploy workflow passes its own): gets Key Vault Secrets Officer on the vault. Empty: none.')
param secretsOfficerPrincipalId string = ''
@allowed(['ServicePrincipal', 'User', 'Group'])
param secretsOfficerPrincipalType string = 'ServicePrincipal'

@description('Memory of each instance (MB).')
@allowed([512, 2048, 4096])
param instanceMemoryMB int = 2048
@description('Upper bound of the scale-out, all scale groups together.')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 40
@description('Always-ready instances of the HTTP scale group (scoring); they are billed while idle. 0: scale to zero.')
@minValue(0)
@maxValue(20)
param alwaysReadyHttpInstances int = 1
@description('Zone-redundant plan; only in regions where Flex Consumption supports availability zones.')
param zoneRedundant bool = false
@description('Replication of the storage account that holds the data drops, the registry and the models.')
@allowed(['Standard_GRS', 'Standard_RAGRS', 'Standard_GZRS', 'Standard_RAGZRS'])
param storageSku string = 'Standard_GRS'

var storageName = take(toLower(replace(name, '-', '')), 24)
var deploymentContainerName = 'app-package'
var deadLetterContainerName = 'eventgrid-deadletter'
// The app creates its containers on first use; declaring them lets a first data drop land before that.
var appContainerNames = ['datasets', 'datasets-rejected', 'mlops', 'predictions', 'feedback', 'scoring-requests', 'scoring-results']

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35: default network action stays Allow: a Flex Consumption app without VNet integration reaches its host storage over the public endpoint from no fixed address (private storage needs VNet integration and private endpoints, https://learn.microsoft.com/azure/azure-functions/functions-networking-options); shared keys are disabled, so every request is an Entra-authorized one
  // checkov:skip=CKV_AZURE_43: the name is an expression (take(toLower(...), 24) of the name parameter, which is restricted to 3-18 characters), which checkov cannot evaluate
  // checkov:skip=CKV_AZURE_59: public network access is required for the same reason as CKV_AZURE_35
  name: storageName
  location: location
  sku: { name: storageSku }
  kind: 'StorageV2'
  properties: {
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false // identity-based connections only: no account key works
    allowCrossTenantReplication: false
    defaultToOAuthAuthentication: true
    isLocalUserEnabled: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: { defaultAction: 'Allow', bypass: 'AzureServices' }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    isVersioningEnabled: true // originals are never lost, even by mistake
    deleteRetentionPolicy: { enabled: true, days: 7 }
    containerDeleteRetentionPolicy: { enabled: true, days: 7 }
  }
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: { publicAccess: 'None' }
}

resource appContainers 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = [for container in appContainerNames: {
  parent: blobService
  name: container
  properties: { publicAccess: 'None' }
}]

// Events Event Grid could not deliver after its retries (infra/eventgrid.bicep).
resource deadLetterContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deadLetterContainerName
  properties: { publicAccess: 'None' }
}

resource logs 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: '${name}-logs'
  location: location
  properties: { retentionInDays: 30, sku: { name: 'PerGB2018' } }
}

resource insights 'Microsoft.Insights/components@2020-02-02' = {
  name: '${name}-ai'
  location: location
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: logs.id
    DisableLocalAuth: true // ingestion needs an Entra token: the app's identity + Monitoring Metrics Publisher
  }
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  // checkov:skip=CKV_AZURE_109: no firewall (default action Allow): App Service resolves Key Vault references over the public endpoint unless the app has VNet integration, and the deploy workflow writes the secrets from GitHub-hosted runners (no fixed addresses); access is RBAC only (Key Vault Secrets User for the app, Secrets Officer for the deployer)
  // checkov:skip=CKV_AZURE_189: public network access is required for the same reason as CKV_AZURE_109
  name: take('${name}-kv', 24)
  location: location
  properties: {
    tenantId: subscription().tenantId
    sku: { family: 'A', name: 'standard' }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    enablePurgeProtection: true // a deleted vault (and its name) is kept 90 days: see infra/README.md
    publicNetworkAccess: 'Enabled'
    networkAcls: { defaultAction: 'Allow', bypass: 'AzureServices' }
  }
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225: zone redundancy is the zoneRedundant parameter (default off): Flex Consumption supports it only in some regions, https://learn.microsoft.com/azure/reliability/reliability-functions
  name: '${name}-plan'
  location: location
  kind: 'functionapp'
  sku: { tier: 'FlexConsumption', name: 'FC1' }
  properties: {
    reserved: true
    zoneRedundant: zoneRedundant
  }
}

var secretSettings = {
  'github-webhook-secret': 'MLOPS_GITHUB_WEBHOOK_SECRET'
  'github-token': 'MLOPS_GITHUB_TOKEN'
  'ado-pat': 'MLOPS_ADO_PAT'
  'ado-webhook-secret': 'MLOPS_ADO_WEBHOOK_SECRET'
}
var keyVaultReferences = [for secret in filter(keyVaultSecrets, s => contains(secretSettings, s)): {
  name: secretSettings[secret]
  value: '@Microsoft.KeyVault(VaultName=${vault.name};SecretName=${secret})'
}]
var optionalSettings = filter([
  { name: 'MLOPS_GITHUB_REPOSITORY', value: githubRepository }
  { name: 'MLOPS_ADO_ORG_URL', value: adoOrgUrl }
  { name: 'MLOPS_ADO_PROJECT', value: adoProject }
  { name: 'MLOPS_ADO_REPOSITORY', value: adoRepository }
  { name: 'MLOPS_APP_VERSION', value: appVersion }
], setting => !empty(setting.value))
var baseSettings = [
  // Host storage by identity: https://learn.microsoft.com/azure/azure-functions/functions-reference#connecting-to-host-storage-with-an-identity
  { name: 'AzureWebJobsStorage__accountName', value: storage.name }
  { name: 'AzureWebJobsStorage__credential', value: 'managedidentity' }
  { name: 'APPLICATIONINSIGHTS_CONNECTION_STRING', value: insights.properties.ConnectionString }
  { name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING', value: 'Authorization=AAD' }
  { name: 'MLOPS_GIT_SOURCE', value: gitSource }
  { name: 'MLOPS_GIT_BRANCH', value: gitBranch }
  { name: 'MLOPS_GIT_SPECS_FOLDER', value: gitSpecsFolder }
  { name: 'MLOPS_MONITOR_SCHEDULE', value: '0 0 * * * *' }
]

// Per-function scaling: Flex Consumption scales all HTTP functions together as one group, all blob
// (Event Grid) functions as another, and every other function (here each queue and timer trigger:
// train, export, validate, retrain, monitor, the poison handlers, sweeper) on its own, so a training
// burst never takes instances from scoring, and vice versa.
// https://learn.microsoft.com/azure/azure-functions/flex-consumption-plan#per-function-scaling
// Always-ready instances are set per scale group: `http` (scoring lives there: `score` is an HTTP
// function, so it cannot be named alone as `function:score`), `blob`, `durable`, or `function:<name>`
// for the other triggers.
// https://learn.microsoft.com/azure/azure-functions/flex-consumption-how-to#set-always-ready-instance-counts
// siteConfig holds only properties Flex Consumption accepts: it rejects ftpsState, linuxFxVersion,
// alwaysOn, functionAppScaleLimit, use32BitWorkerProcess, ... with error 51021.
resource app 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_17: no client certificates: GitHub and Azure DevOps webhooks, Event Grid's blob deliveries and scoring clients cannot present one; HTTP functions use function keys, webhooks their signatures
  // checkov:skip=CKV_AZURE_212: Flex Consumption has no worker count (numberOfWorkers): instances scale per function group, with alwaysReadyHttpInstances kept warm for scoring
  // checkov:skip=CKV_AZURE_222: public network access is required: Event Grid delivers blob events to the app's webhook, and git webhooks and scoring clients call it from the internet
  // checkov:skip=CKV_AZURE_78: ftpsState is not a valid site property on Flex Consumption (ARM rejects it, error 51021; see "Flex Consumption plan deprecations" in https://learn.microsoft.com/azure/azure-functions/functions-app-settings); code is deployed with OneDeploy through Entra-authenticated ARM, never FTP
  name: '${name}-func'
  location: location
  kind: 'functionapp,linux'
  identity: { type: 'SystemAssigned' }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientCertEnabled: false
    publicNetworkAccess: 'Enabled'
    keyVaultReferenceIdentity: 'SystemAssigned'
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: { type: 'SystemAssignedIdentity' }
        }
      }
      runtime: { name: 'python', version: '3.11' }
      // Scale groups and always-ready instances: see the comment above `resource app`.
      scaleAndConcurrency: {
        instanceMemoryMB: instanceMemoryMB
        maximumInstanceCount: maximumInstanceCount
        alwaysReady: alwaysReadyHttpInstances > 0 ? [{ name: 'http', instanceCount: alwaysReadyHttpInstances }] : []
      }
    }
    // Only site properties Flex Consumption accepts (see the comment above `resource app`).
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      http20Enabled: true
      remoteDebuggingEnabled: false
      healthCheckPath: '/api/health' // anonymous; 503 when storage is unreachable
      appSettings: concat(baseSettings, optionalSettings, keyVaultReferences)
    }
  }
}

// Built-in role definition ids: https://learn.microsoft.com/azure/role-based-access-control/built-in-roles
var roles = {
  storageAccountContributor: '17d1049b-9a84-46fb-8f53-869881c3d3ab'
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  storageBlobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
  keyVaultSecretsUser: '4633458b-17de-408a-b874-0445c86b69e6'
  keyVaultSecretsOfficer: 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7'
}

// What the app's identity needs on its host storage (AzureWebJobsStorage), from the table in
// https://learn.microsoft.com/azure/azure-functions/functions-reference#connecting-to-host-storage-with-an-identity
// and the blob trigger's "Grant permission to the identity" table
// (https://learn.microsoft.com/azure/azure-functions/functions-bindings-storage-blob-trigger):
//   - host only, and the timer triggers' locks: Storage Blob Data Owner (also what the app's own
//     registry, data and model blobs need, and the Flex deployment container)
//   - host diagnostic events: Storage Table Data Contributor
//   - blob trigger (`prepare`): all of Storage Account Contributor, Storage Blob Data Owner and Storage
//     Queue Data Contributor (receipts and the poison queue live on AzureWebJobsStorage)
//   - queue triggers (Storage Queue Data Reader + Message Processor) and the app's own sends (Storage
//     Queue Data Message Sender): all included in Storage Queue Data Contributor, which also lets the
//     host create the queues and their -poison queues
var hostStorageRoles = [
  roles.storageBlobDataOwner
  roles.storageQueueDataContributor
  roles.storageTableDataContributor
  roles.storageAccountContributor
]

resource hostStorageRoleAssignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for role in hostStorageRoles: {
  name: guid(storage.id, app.id, role)
  scope: storage
  properties: {
    principalId: app.identity.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role)
  }
}]

// Local auth is disabled on Application Insights: telemetry is accepted from identities with this role.
// https://learn.microsoft.com/azure/azure-monitor/app/azure-ad-authentication
resource insightsRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(insights.id, app.id, roles.monitoringMetricsPublisher)
  scope: insights
  properties: {
    principalId: app.identity.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
  }
}

resource vaultRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, app.id, roles.keyVaultSecretsUser)
  scope: vault
  properties: {
    principalId: app.identity.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsUser)
  }
}

resource secretsOfficerRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(secretsOfficerPrincipalId)) {
  name: guid(vault.id, secretsOfficerPrincipalId, roles.keyVaultSecretsOfficer)
  scope: vault
  properties: {
    principalId: secretsOfficerPrincipalId
    principalType: secretsOfficerPrincipalType
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsOfficer)
  }
}

// Blob events of the storage account. Its subscription (datasets/ -> the `prepare` function's webhook)
// is in infra/eventgrid.bicep: the webhook's blobs_extension key exists only once the code runs.
// One system topic per storage account; its identity writes dead-lettered events (shared keys are off).
resource blobEvents 'Microsoft.EventGrid/systemTopics@2022-06-15' = {
  name: '${name}-blob-events'
  location: location
  identity: { type: 'SystemAssigned' }
  properties: {
    source: storage.id
    topicType: 'Microsoft.Storage.StorageAccounts'
  }
}

resource deadLetterRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(deadLetterContainer.id, blobEvents.id, roles.storageBlobDataContributor)
  scope: deadLetterContainer
  properties: {
    principalId: blobEvents.identity.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
  }
}

output functionAppName string = app.name
output functionAppHostName string = app.properties.defaultHostName
output storageAccountName string = storage.name
output keyVaultName string = vault.name
output systemTopicName string = blobEvents.name
output deadLetterContainerName string = deadLetterContainer.name
