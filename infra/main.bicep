// Azure resources for the MLOps function app: Flex Consumption plan, storage reached with the
// app's managed identity (no keys in settings), Key Vault for webhook secrets and git tokens,
// Application Insights. Deploy: see infra/README.md.
targetScope = 'resourceGroup'

@description('Short name used to derive resource names.')
param name string = 'mlops${uniqueString(resourceGroup().id)}'
param location string = resourceGroup().location
@description('Branch whose pushes retrain models.')
param gitBranch string = 'main'

var storageName = take(toLower(replace(name, '-', '')), 24)

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: storageName
  location: location
  sku: { name: 'Standard_LRS' }
  kind: 'StorageV2'
  properties: {
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false // identity-based connections only
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: { isVersioningEnabled: true } // originals are never lost, even by mistake
}

resource deployContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: 'app-package'
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
  properties: { Application_Type: 'web', WorkspaceResourceId: logs.id, DisableLocalAuth: true }
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: take('${name}-kv', 24)
  location: location
  properties: {
    tenantId: subscription().tenantId
    sku: { family: 'A', name: 'standard' }
    enableRbacAuthorization: true
  }
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: '${name}-plan'
  location: location
  kind: 'functionapp'
  sku: { tier: 'FlexConsumption', name: 'FC1' }
  properties: { reserved: true }
}

resource app 'Microsoft.Web/sites@2024-04-01' = {
  name: '${name}-func'
  location: location
  kind: 'functionapp,linux'
  identity: { type: 'SystemAssigned' }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}app-package'
          authentication: { type: 'SystemAssignedIdentity' }
        }
      }
      runtime: { name: 'python', version: '3.11' }
      scaleAndConcurrency: { maximumInstanceCount: 40, instanceMemoryMB: 2048 }
    }
    siteConfig: {
      appSettings: [
        { name: 'AzureWebJobsStorage__accountName', value: storage.name }
        { name: 'AzureWebJobsStorage__credential', value: 'managedidentity' }
        { name: 'APPLICATIONINSIGHTS_CONNECTION_STRING', value: insights.properties.ConnectionString }
        { name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING', value: 'Authorization=AAD' }
        { name: 'MLOPS_GIT_BRANCH', value: gitBranch }
        { name: 'MLOPS_MONITOR_SCHEDULE', value: '0 0 * * * *' }
        { name: 'MLOPS_GITHUB_WEBHOOK_SECRET', value: '@Microsoft.KeyVault(VaultName=${vault.name};SecretName=github-webhook-secret)' }
        { name: 'MLOPS_GITHUB_TOKEN', value: '@Microsoft.KeyVault(VaultName=${vault.name};SecretName=github-token)' }
        { name: 'MLOPS_ADO_PAT', value: '@Microsoft.KeyVault(VaultName=${vault.name};SecretName=ado-pat)' }
        { name: 'MLOPS_ADO_WEBHOOK_SECRET', value: '@Microsoft.KeyVault(VaultName=${vault.name};SecretName=ado-webhook-secret)' }
      ]
    }
  }
}

// Built-in role ids: Storage Blob Data Owner, Storage Queue Data Contributor, Key Vault Secrets User.
var roles = {
  blobOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  queueContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  secretsUser: '4633458b-17de-408a-b874-0445c86b69e6'
}

resource blobRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, app.id, roles.blobOwner)
  scope: storage
  properties: {
    principalId: app.identity.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.blobOwner)
  }
}

resource queueRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, app.id, roles.queueContributor)
  scope: storage
  properties: {
    principalId: app.identity.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.queueContributor)
  }
}

resource vaultRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, app.id, roles.secretsUser)
  scope: vault
  properties: {
    principalId: app.identity.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.secretsUser)
  }
}

output functionAppName string = app.name
output storageAccountName string = storage.name
output keyVaultName string = vault.name
